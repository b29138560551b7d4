"""The WebSocket protocol end to end: a real websockets client, a real server, the embedded model, German speech."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
import sacrebleu
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect

from app.runtime import Engine, EngineConfig
from app.server import DragomanServer, ServerConfig
from engine.audio import resample
from tests.server_clients import SamplesTrack, Transcript, pcm16, stream_pcm, words
from tests.speech import speech

pytestmark = pytest.mark.slow

# Words the English reference of each German sentence must bring (SENTENCES["de"][i].english)
# (sentences 0 and 3 are the ones Whisper base translates reliably when streamed)
KEY_WORDS = {
    0: {"morning", "weather", "berlin", "park", "afternoon"},
    3: {"sister", "works", "hospital", "doctor", "helps", "people"},
}


def assert_translates(transcript: Transcript, index: int, min_hits: int = 3) -> None:
    got = words(transcript.text)
    hits = KEY_WORDS[index] & got
    assert len(hits) >= min_hits, f"expected words of {sorted(KEY_WORDS[index])} in {transcript.text!r}"


def assert_well_formed(transcript: Transcript) -> None:
    """ready first, end last, all commits before end, no errors."""
    types = transcript.types()
    assert types[0] == "ready" and types[-1] == "end" and types.count("end") == 1
    assert not transcript.errors(), transcript.errors()
    assert transcript.commits, "no commits"
    for c in transcript.commits:
        assert 0 <= c["start_s"] <= c["end_s"]


async def test_german_stream_gives_english_commits_then_end(server, audio_dir):
    """A German recording streamed as 20 ms PCM frames yields English commits, and `end` after the last one."""
    audio, utt = speech("de", 0, audio_dir)
    out = await stream_pcm(server.ws_url, audio, realtime=4.0)
    assert_well_formed(out)
    assert_translates(out, 0)
    assert sacrebleu.sentence_chrf(out.text, [utt.english]).score > 50
    ready = out.messages[0]
    assert ready["protocol"] == 1 and ready["session"]
    last_commit = max(i for i, m in enumerate(out.messages) if m["type"] == "commit")
    assert out.messages.index(out.messages[-1]) > last_commit
    assert any(m["type"] == "stats" and m["audio_s"] > 0 for m in out.messages)
    # commits are in stream time and inside the recording
    assert out.commits[-1]["end_s"] <= len(audio) / 16000 + 0.5


async def test_two_clients_at_once_get_their_own_captions(server, audio_dir):
    """Two simultaneous clients (16 kHz int16 and 44.1 kHz float32) both get correct, unmixed translations."""
    a, _ = speech("de", 0, audio_dir)
    b, _ = speech("de", 3, audio_dir)
    b44 = resample(b, 16000, 44100)
    out_a, out_b = await asyncio.gather(
        stream_pcm(server.ws_url, a, realtime=3.0),
        stream_pcm(server.ws_url, b44, sample_rate=44100, encoding="pcm_f32le", realtime=3.0),
    )
    for out in (out_a, out_b):
        assert_well_formed(out)
    assert_translates(out_a, 0)
    assert_translates(out_b, 3)
    assert out_a.messages[0]["session"] != out_b.messages[0]["session"]
    assert not words(out_a.text) & KEY_WORDS[3]
    assert not words(out_b.text) & KEY_WORDS[0]


async def test_protocol_errors_keep_the_connection_usable(server, audio_dir):
    """Bad messages get error events with stable codes; the same connection then runs a normal session."""
    audio, _ = speech("de", 3, audio_dir)
    async with connect(server.ws_url) as ws:

        async def expect_error(send: str | bytes) -> str:
            await ws.send(send)
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["type"] == "error", msg
            return msg["code"]

        assert await expect_error(b"\x00\x00") == "not_started"
        assert await expect_error("{nope") == "bad_json"
        assert await expect_error('{"type": "fly"}') == "unknown_type"
        assert await expect_error('{"type": "start", "encoding": "opus"}') == "bad_message"
        assert await expect_error('{"type": "start", "language": "xq"}') == "bad_message"
        await ws.send(json.dumps({"type": "start", "language": "de"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        assert await expect_error('{"type": "start"}') == "already_started"
        assert await expect_error(b"\x00\x00\x00") == "bad_audio"
        for i in range(0, len(audio), 1600):
            await ws.send(pcm16(audio[i : i + 1600]))
        await ws.send('{"type": "stop"}')
        out = Transcript()
        async with asyncio.timeout(120):
            async for raw in ws:
                out.messages.append(json.loads(raw))
                if out.messages[-1]["type"] == "end":
                    break
        assert not out.errors()
        assert_translates(out, 3)


async def test_busy_beyond_max_sessions_and_vanishing_client(backend, audio_dir):
    """Past max_sessions a client gets `busy`; a client that vanishes mid-stream frees its slot for the next."""
    audio, _ = speech("de", 3, audio_dir)
    async with (
        Engine(backend, EngineConfig(max_sessions=1)) as engine,
        DragomanServer(engine, ServerConfig(port=0)) as srv,
    ):
        async with connect(srv.ws_url) as first:
            await first.send('{"type": "start"}')
            assert json.loads(await first.recv())["type"] == "ready"
            await first.send(pcm16(audio[:16000]))
            async with connect(srv.ws_url) as second:
                await second.send('{"type": "start"}')
                msg = json.loads(await second.recv())
                assert (msg["type"], msg["code"]) == ("error", "busy")
        # `first` disconnected without stop: its slot comes free
        async with asyncio.timeout(10):
            while engine.n_sessions:
                await asyncio.sleep(0.05)
        out = await stream_pcm(srv.ws_url, audio)
        assert_well_formed(out)
        assert_translates(out, 3)


async def test_webrtc_session_over_the_same_socket(server, audio_dir):
    """An aiortc client sends speech as a WebRTC track, signalling on /ws; captions come back on the socket."""
    audio, _ = speech("de", 0, audio_dir)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = SamplesTrack(np.concatenate([audio, np.zeros(8000, np.float32)]))
    pc.addTrack(track)
    out = Transcript()
    try:
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "language": "de"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            async with asyncio.timeout(120):
                async for raw in ws:
                    msg = json.loads(raw)
                    out.messages.append(msg)
                    if msg["type"] == "answer":
                        await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                        asyncio.get_running_loop().call_later(
                            len(track.pcm) / track.rate + 1.0, lambda: asyncio.ensure_future(ws.send('{"type":"stop"}'))
                        )
                    elif msg["type"] == "end":
                        break
    finally:
        await pc.close()
    assert not out.errors(), out.errors()
    assert out.types()[-1] == "end"
    assert_translates(out, 0)


async def test_a_client_that_never_reads_does_not_delay_another(server, audio_dir, caplog):
    """A client that floods bad frames and never reads its replies is cut off; a parallel client is unaffected."""
    import socket

    from websockets.exceptions import ConnectionClosed

    caplog.set_level(logging.WARNING, logger="app.server")
    audio, _ = speech("de", 3, audio_dir)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its replies back up quickly
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    async with connect(server.ws_url, sock=sock, max_queue=1) as hog:
        await hog.send('{"type": "start"}')

        async def flood() -> int:
            # every 1-byte frame earns an `error` reply, which is never dropped: the reply queue must overflow
            sent = 0
            try:
                for _ in range(200_000):
                    await hog.send(b"\x00")
                    sent += 1
                    if sent % 200 == 0:
                        await asyncio.sleep(0)
            except ConnectionClosed:
                pass
            return sent

        flooding = asyncio.ensure_future(flood())
        out = await stream_pcm(server.ws_url, audio, realtime=3.0)
        assert_well_formed(out)
        assert_translates(out, 3)
        async with asyncio.timeout(60):
            await flooding
            while hog.state.name != "CLOSED":  # the server gave up on it
                try:
                    await hog.recv()
                except ConnectionClosed:
                    break
    assert "client does not read" in caplog.text or "client accepted nothing" in caplog.text
