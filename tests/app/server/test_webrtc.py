"""WebRTC input: an aiortc peer sends a real speech track over loopback; the server side pulls and resamples it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from app.server.webrtc import IceServer, WebRTCAudioReceiver, WebRTCConfig, frame_to_mono, parse_ice_server
from tests.server_clients import SamplesTrack, best_envelope_correlation
from tests.speech import speech


def test_parse_ice_server():
    """STUN/TURN specs parse with optional credentials, which never show in repr (logs)."""
    assert parse_ice_server("stun:stun.example.org:3478") == IceServer("stun:stun.example.org:3478")
    turn = parse_ice_server("alice:s3cret@turn:turn.example.org:3478?transport=udp")
    assert turn == IceServer("turn:turn.example.org:3478?transport=udp", "alice", "s3cret")
    assert "s3cret" not in repr(turn)
    assert turn.to_browser() == {
        "urls": ["turn:turn.example.org:3478?transport=udp"],
        "username": "alice",
        "credential": "s3cret",
    }
    with pytest.raises(ValueError, match="stun:host:port"):
        parse_ice_server("http://example.org")


def test_frame_to_mono_packed_and_planar():
    """Stereo s16 packed and float planar frames both become float32 mono at their rate."""
    from av import AudioFrame

    packed = AudioFrame.from_ndarray(np.array([[16384, 0, -16384, 0]], np.int16), format="s16", layout="stereo")
    packed.sample_rate = 48000
    samples, rate = frame_to_mono(packed)
    assert rate == 48000
    np.testing.assert_allclose(samples, [0.25, -0.25])
    planar = AudioFrame.from_ndarray(np.array([[0.5, 0.5], [0.0, 1.0]], np.float32), format="fltp", layout="stereo")
    planar.sample_rate = 44100
    np.testing.assert_allclose(frame_to_mono(planar)[0], [0.25, 0.75])


@pytest.mark.slow
async def test_loopback_track_arrives_as_16k_speech(audio_dir):
    """Speech sent as a 48 kHz Opus track over loopback (no STUN) arrives at 16 kHz with the same envelope."""
    audio, _ = speech("de", 1, audio_dir)
    audio = audio[: 16000 * 3]  # 3 s is enough to compare envelopes
    received: list[np.ndarray] = []
    failures: list[str] = []
    receiver = WebRTCAudioReceiver(WebRTCConfig(), lambda x, sr: received.append((x, sr)), failures.append)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = SamplesTrack(audio)
    client.addTrack(track)
    try:
        await client.setLocalDescription(await client.createOffer())
        answer = await receiver.accept(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        async with asyncio.timeout(30):
            while receiver.audio_s < len(audio) / 16000 + 0.5:
                await asyncio.sleep(0.1)
    finally:
        await client.close()
        await receiver.close()
    assert not failures
    assert {sr for _, sr in received} == {16000}
    got = np.concatenate([x for x, _ in received])
    assert 20 * np.log10(np.sqrt(np.mean(got**2)) + 1e-9) > -40  # speech, not silence
    assert best_envelope_correlation(audio, got) > 0.9
