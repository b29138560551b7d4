"""The compatible APIs under hostile input and at shutdown: bad input on every endpoint at once never touches a good
client streaming speech meanwhile; a graceful shutdown gives Deepgram and Realtime clients their final results."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from engine.audio import resample
from tests.server_clients import junk_socket, pcm16, serving, upload_status, words
from tests.speech import speech

pytestmark = pytest.mark.slow
EN_WORDS = {"morning", "everyone", "weather", "london", "price", "coffee"}  # SENTENCES["en"][0]


@pytest.fixture
async def server(backend):
    async with serving(backend, max_sessions=8) as srv:
        yield srv


async def deepgram_stream(base: str, audio: np.ndarray, *, realtime: float = 3.0) -> list[dict]:
    out: list[dict] = []
    async with connect(base + "/v1/listen?encoding=linear16&sample_rate=16000&language=en") as ws:

        async def receive() -> None:
            async for raw in ws:
                out.append(json.loads(raw))

        receiver = asyncio.ensure_future(receive())
        for i in range(0, len(audio), 1600):
            await ws.send(pcm16(audio[i : i + 1600]))
            await asyncio.sleep(0.1 / realtime)
        await ws.send('{"type": "CloseStream"}')
        await asyncio.wait_for(receiver, 120)
    return out


async def hostile(base: str, http: str) -> list[str]:
    """One of each kind of bad input on the new endpoints; what each got back."""
    got: list[str] = []

    async def socket(url: str, sends: list) -> None:
        got.extend(await junk_socket(url, sends, label=lambda msg: msg["type"], read_s=2, close_timeout_s=2))

    def upload(payload: bytes, name: str = "file") -> None:
        got.append(f"http {upload_status(http, payload, name)}")

    huge_b64 = base64.b64encode(bytes(300_000)).decode()
    await asyncio.gather(
        socket(
            base + "/v1/realtime",
            [
                "{nope",
                '{"type": "response.create"}',
                '{"type": "input_audio_buffer.append", "audio": "@@"}',
                '{"type": "session.update", "session": {"type": "transcription", "audio": '
                '{"input": {"format": {"type": "audio/pcm", "rate": 3}}}}}',
            ],
        ),
        socket(base + "/v1/realtime", [json.dumps({"type": "input_audio_buffer.append", "audio": huge_b64})]),
        socket(
            base + "/v1/listen?encoding=linear16&sample_rate=16000",
            ["{nope", '{"type": "Dance"}', b"\x00" * 3, bytes(2 * 2**20)],
        ),
        socket(base + "/v1/listen?encoding=speex&sample_rate=16000", []),
        socket(base + "/v1/listen?sample_rate=16000", [b"not a wav file at all"]),
        asyncio.to_thread(upload, b"not audio" * 1000),
        asyncio.to_thread(upload, b""),
        asyncio.to_thread(upload, bytes(500), name="attachment"),
    )
    return got


async def test_bad_input_everywhere_leaves_a_good_stream_alone(server, audio_dir):
    """While every endpoint gets junk, a Deepgram client streaming English speech gets its complete transcript."""
    audio, _ = speech("en", 0, audio_dir)
    audio = np.concatenate([audio, np.zeros(8000, np.float32)])
    base = server.ws_url.rsplit("/", 1)[0]
    http = server.url.rstrip("/")
    good, bad = await asyncio.gather(deepgram_stream(base, audio), hostile(base, http))
    assert {"Error", "error", "close 1009", "http 400"} <= set(bad), bad
    assert not any(t.startswith("http 5") for t in bad), bad
    finals = " ".join(
        m["channel"]["alternatives"][0]["transcript"] for m in good if m["type"] == "Results" and m["is_final"]
    )
    assert not [m for m in good if m["type"] == "Error"] and good[-1]["type"] == "Metadata"
    assert len(words(finals) & EN_WORDS) >= 4, finals
    async with asyncio.timeout(20):
        while server.engine.n_sessions or server.n_connections:
            await asyncio.sleep(0.05)


async def test_shutdown_flushes_deepgram_and_realtime_clients(server, audio_dir):
    """A graceful shutdown mid-speech: Deepgram gets its finals, Metadata and 1001; Realtime its completed turn."""
    audio, _ = speech("en", 0, audio_dir)
    base = server.ws_url.rsplit("/", 1)[0]
    dg: list[dict] = []
    rt: list[dict] = []
    codes: dict[str, int | None] = {}
    sent = asyncio.Event()
    a24 = resample(audio, 16000, 24000)

    async def deepgram() -> None:
        async with connect(base + "/v1/listen?encoding=linear16&sample_rate=16000&language=en") as ws:
            for i in range(0, len(audio) * 3 // 4, 1600):
                await ws.send(pcm16(audio[i : i + 1600]))
                await asyncio.sleep(0.02)
            sent.set()
            async for raw in ws:
                dg.append(json.loads(raw))
        codes["deepgram"] = ws.close_code

    async def realtime() -> None:
        async with connect(base + "/v1/realtime") as ws:
            await ws.send(
                '{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
                '{"turn_detection": null, "transcription": {"language": "en"}}}}}'
            )
            for i in range(0, len(a24) * 3 // 4, 2400):
                await ws.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm16(a24[i : i + 2400])).decode(),
                        }
                    )
                )
                await asyncio.sleep(0.02)
            await sent.wait()
            async for raw in ws:
                rt.append(json.loads(raw))
        codes["realtime"] = ws.close_code

    clients = asyncio.ensure_future(asyncio.gather(deepgram(), realtime()))
    await sent.wait()
    await asyncio.sleep(0.3)
    await server.shutdown(timeout_s=60)
    await asyncio.wait_for(clients, 60)
    assert codes == {"deepgram": 1001, "realtime": 1001}, codes
    assert [m["variant"] for m in dg if m["type"] == "Error"] == ["shutting_down"] and dg[-1]["type"] == "Metadata"
    finals = " ".join(
        m["channel"]["alternatives"][0]["transcript"] for m in dg if m["type"] == "Results" and m["is_final"]
    )
    assert len(words(finals) & {"morning", "everyone", "weather", "london"}) >= 3, finals
    assert [m["error"]["code"] for m in rt if m["type"] == "error"] == ["shutting_down"]
    completed = [m for m in rt if m["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == 1 and len(words(completed[0]["transcript"]) & {"morning", "weather", "london"}) >= 2
