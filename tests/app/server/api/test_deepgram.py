"""`WS /v1/listen` with the real Deepgram SDK (pinned in the test extra) against a real server with the embedded
model and synthesised speech; the byte-stream decoder; and refusals of bad input."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import jiwer
import numpy as np
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.server import DragomanServer
from app.server.api.common import HandshakeRefused
from app.server.api.deepgram import ListenParams, PcmStream
from app.server.auth import AccessConfig
from tests.server_clients import pcm16, serving, words
from tests.speech import speech, write_wav

TOKEN = "deepgram-test-token-77ab"
EN_WORDS = {"morning", "everyone", "weather", "london", "price", "coffee"}  # SENTENCES["en"][0]


@pytest.fixture
async def server(backend):
    async with serving(backend, max_sessions=3, access=AccessConfig(token=TOKEN)) as srv:
        yield srv


def deepgram(srv: DragomanServer, key: str = TOKEN) -> AsyncDeepgramClient:
    base = f"127.0.0.1:{srv.port}"
    env = DeepgramClientEnvironment(
        base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}", agent_rest=f"http://{base}"
    )
    return AsyncDeepgramClient(api_key=key, environment=env)


async def stream_with_sdk(
    srv: DragomanServer, audio: np.ndarray, *, finalize_at: float | None = None, **params: Any
) -> list[Any]:
    """Stream `audio` (16 kHz) through the SDK's live client at 4x real time; CloseStream; every message back."""
    received: list[Any] = []
    async with deepgram(srv).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=16000, **params
    ) as socket:

        async def listen() -> None:
            async for message in socket:
                received.append(message)

        listener = asyncio.ensure_future(listen())
        step = 1600  # 100 ms
        for i in range(0, len(audio), step):
            await socket.send_media(pcm16(audio[i : i + step]))
            if finalize_at is not None and i <= finalize_at * 16000 < i + step:
                await socket.send_finalize()
            await asyncio.sleep(0.025)
        await socket.send_close_stream()
        await asyncio.wait_for(listener, 120)
    return received


def finals_text(received: list[Any]) -> str:
    return " ".join(
        m.channel.alternatives[0].transcript for m in received if getattr(m, "type", None) == "Results" and m.is_final
    ).strip()


@pytest.mark.slow
async def test_sdk_live_stream_gets_interim_and_final_results(server, audio_dir, whisper_bundle):
    """Interim and final Results; the finals' words match `dragoman file`'s; word times are ordered; Metadata last."""
    from engine.models.whisper.transcribe import TranscribeOptions, transcribe

    audio, _ = speech("en", 0, audio_dir)
    audio = np.concatenate([audio, np.zeros(16000, np.float32)])
    received = await stream_with_sdk(server, audio, interim_results=True, language="en", punctuate=True)
    results = [m for m in received if getattr(m, "type", None) == "Results"]
    assert any(not m.is_final for m in results), "no interim results"
    assert any(m.is_final and m.speech_final for m in results), "no speech_final"
    text = finals_text(received)
    offline = transcribe(whisper_bundle, audio, TranscribeOptions(language="en", beam_size=5)).text
    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    assert jiwer.wer(offline, text, reference_transform=norm, hypothesis_transform=norm) <= 0.25, (offline, text)
    assert len(words(text) & EN_WORDS) >= 4, text
    all_words = [w for m in results if m.is_final for w in m.channel.alternatives[0].words]
    assert all_words and all(a.start <= a.end <= b.start + 1e-6 for a, b in zip(all_words, all_words[1:]))
    assert all(0 <= w.start <= len(audio) / 16000 + 0.5 for w in all_words)
    assert getattr(received[-1], "type", None) == "Metadata" and received[-1].duration == pytest.approx(
        len(audio) / 16000, abs=0.05
    )


@pytest.mark.slow
async def test_finalize_flushes_and_the_stream_goes_on(server, audio_dir):
    """Finalize mid-stream gives from_finalize finals of what was said so far; later audio still transcribes."""
    a, _ = speech("en", 0, audio_dir)
    b, _ = speech("en", 1, audio_dir)
    gap = np.zeros(8000, np.float32)
    audio = np.concatenate([a, gap, b, gap])
    received = await stream_with_sdk(server, audio, finalize_at=(len(a) + len(gap)) / 16000, language="en")
    results = [m for m in received if getattr(m, "type", None) == "Results" and m.is_final]
    flushed = [i for i, m in enumerate(results) if m.from_finalize]
    assert flushed, "no from_finalize result"
    before = " ".join(m.channel.alternatives[0].transcript for m in results[: flushed[0] + 1])
    after = " ".join(m.channel.alternatives[0].transcript for m in results[flushed[0] + 1 :])
    assert len(words(before) & EN_WORDS) >= 4, before
    assert (
        len(
            words(after)
            & {"meeting", "meetings", "starts", "nine", "o'clock", "please", "bring", "your", "notes", "laptop"}
        )
        >= 4
    ), after
    starts = [m.start for m in results if m.channel.alternatives[0].transcript]
    assert starts == sorted(starts) and starts[-1] >= len(a) / 16000 - 0.5  # connection time across the flush


@pytest.mark.slow
async def test_task_translate_extension_gives_english(server, audio_dir):
    """The Dragoman query parameter task=translate (sent through the SDK's extra query parameters) turns German
    speech into English finals."""
    audio, _ = speech("de", 3, audio_dir)
    audio = np.concatenate([audio, np.zeros(8000, np.float32)])
    received = await stream_with_sdk(
        server, audio, language="de", request_options={"additional_query_parameters": {"task": "translate"}}
    )
    text = finals_text(received)
    assert len(words(text) & {"sister", "works", "hospital", "doctor", "helps", "people"}) >= 3, text


async def test_close_stream_ends_with_metadata(server):
    """CloseStream with nothing said: Metadata, then a normal close."""
    async with deepgram(server).listen.v1.connect(model="nova-2", encoding="linear16", sample_rate=8000) as socket:
        await socket.send_media(pcm16(np.zeros(800, np.float32)))
        await socket.send_keep_alive()
        await socket.send_close_stream()
        received = [m async for m in socket]
    assert [getattr(m, "type", None) for m in received][-1] == "Metadata"
    assert received[-1].duration == pytest.approx(0.1, abs=0.01) and received[-1].channels == 1


async def test_wrong_key_and_bad_parameters_are_refused_at_the_handshake(server):
    """A wrong key is the SDK's 401 ApiError; unsupported encodings, languages, rates are 400 before any audio."""
    with pytest.raises(ApiError) as refused:
        async with deepgram(server, "not-the-token").listen.v1.connect(model="nova-3"):
            pass
    assert refused.value.status_code == 401
    url = f"ws://127.0.0.1:{server.port}/v1/listen"
    for query in [
        "encoding=opus&sample_rate=48000",
        "encoding=linear16",
        "encoding=linear16&sample_rate=1000",
        "language=xx",
        "channels=0",
        "interim_results=maybe",
        "task=summarise",
        "endpointing=soon",
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{url}?{query}", additional_headers={"Authorization": f"Token {TOKEN}"}):
                pass
        assert refused.value.response.status_code == 400, query


async def test_browser_style_subprotocol_token(server):
    """Browsers authenticate as Deepgram's JS SDK does, with the subprotocols `token, KEY`; the server accepts `token`."""
    url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with connect(url, subprotocols=["token", TOKEN]) as ws:
        assert ws.subprotocol == "token"
        await ws.send('{"type": "CloseStream"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "Metadata"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=["token", "not-the-token"]):
            pass
    assert refused.value.response.status_code == 401


async def test_bad_messages_get_errors_and_the_stream_survives(server):
    """Garbage JSON, unknown types and a non-WAV stream without an encoding get Error messages; others go on."""
    headers = {"Authorization": f"Token {TOKEN}"}
    url = f"ws://127.0.0.1:{server.port}/v1/listen"
    async with connect(url + "?encoding=linear16&sample_rate=16000", additional_headers=headers) as ws:
        for bad in ["{nope", '{"type": "Dance"}', "[1, 2]", '{"type": "Configure", "features": {}}']:
            await ws.send(bad)
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["type"] == "Error" and msg["description"], msg
        await ws.send(b"\x00")  # half a sample: kept for the next message, not an error
        await ws.send(b"\x00" * 3201)
        await ws.send('{"type": "CloseStream"}')
        last = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert last["type"] == "Metadata" and last["duration"] == pytest.approx(0.1, abs=0.001)
    async with connect(url, additional_headers=headers) as ws:  # no encoding: must be a WAV stream
        await ws.send(b"OggS" + b"\x00" * 100)
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg["type"] == "Error" and "WAV" in msg["description"]


@pytest.mark.slow
async def test_a_wav_stream_in_odd_sized_pieces(server, audio_dir):
    """Without an encoding, a WAV file streamed in odd-sized chunks (header split) transcribes like raw PCM."""
    audio, _ = speech("en", 0, audio_dir)
    data = write_wav(audio_dir / "dg-en0-44k.wav", np.repeat(audio, 2) * 0.9, sample_rate=32000).read_bytes()
    received = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/listen?token={TOKEN}&language=en") as ws:
        for i in range(0, len(data), 3001):
            await ws.send(data[i : i + 3001])
            await asyncio.sleep(0.01)
        await ws.send('{"type": "CloseStream"}')
        async for raw in ws:
            received.append(json.loads(raw))
    text = " ".join(
        m["channel"]["alternatives"][0]["transcript"] for m in received if m["type"] == "Results" and m["is_final"]
    )
    assert len(words(text) & EN_WORDS) >= 4, text
    assert received[-1]["type"] == "Metadata"


def test_pcm_stream_decodes_mulaw_alaw_and_split_samples():
    """G.711 tables match the reference codec; linear16 samples split across messages are joined; stereo is mixed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop") if sys.version_info < (3, 13) else pytest.skip("no audioop")
    every_byte = bytes(range(256))
    for encoding, decode in [("mulaw", audioop.ulaw2lin), ("alaw", audioop.alaw2lin)]:
        stream = PcmStream(ListenParams(encoding=encoding, sample_rate=8000))
        expected = np.frombuffer(decode(every_byte, 2), "<i2") / 32768.0
        np.testing.assert_allclose(stream.decode(every_byte), expected, atol=1e-6)
    stereo = PcmStream(ListenParams(encoding="linear16", sample_rate=16000, channels=2))
    frames = np.array([[1000, 3000], [-2000, 2000]], "<i2").tobytes()
    out = np.concatenate([stereo.decode(frames[:3]), stereo.decode(frames[3:])])
    np.testing.assert_allclose(out * 32768, [2000, 0])


def test_listen_params_follow_deepgram_defaults():
    """No language means English (Deepgram's default), multi means detect, en-US is en; task is Dragoman's."""
    assert ListenParams.parse("").language == "en" and ListenParams.parse("language=multi").language is None
    params = ListenParams.parse("language=en-US&interim_results=true&task=translate&model=nova-3&smart_format=true")
    assert (params.language, params.interim_results, params.task) == ("en", True, "translate")
    with pytest.raises(HandshakeRefused):
        ListenParams.parse("encoding=flac&sample_rate=16000")
