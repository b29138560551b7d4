"""Real clients for the server tests: a websockets caption client and an aiortc audio track made from samples."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.audio import resample

TOKEN = "s3cret-T0ken-4f9a2b"  # a server token for the access tests


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class Transcript:
    """Everything one client received, in order."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def commits(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "commit"]

    @property
    def text(self) -> str:
        return "".join(m["text"] for m in self.commits).strip()

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "error"]


async def stream_pcm(
    ws_url: str,
    samples: np.ndarray,
    *,
    sample_rate: int = 16000,
    frame_s: float = 0.02,
    realtime: float = 0.0,
    language: str | None = "de",
    task: str = "translate",
    encoding: str = "pcm_s16le",
    timeout_s: float = 180.0,
) -> Transcript:
    """Start a session, send `samples` (float32 at `sample_rate`) as small frames, stop, collect until `end`.

    `realtime` > 0 paces the frames at that multiple of real time; 0 sends as fast as the socket takes them.
    """
    out = Transcript()
    async with connect(ws_url, max_size=2**20) as ws:
        await ws.send(
            json.dumps(
                {"type": "start", "task": task, "language": language, "sample_rate": sample_rate, "encoding": encoding}
            )
        )

        async def receive() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                out.messages.append(msg)
                if msg["type"] == "end":
                    return

        receiver = asyncio.ensure_future(receive())
        n = int(frame_s * sample_rate)
        t0 = time.monotonic()
        for i in range(0, len(samples), n):
            chunk = samples[i : i + n]
            data = pcm16(chunk) if encoding == "pcm_s16le" else chunk.astype("<f4").tobytes()
            await ws.send(data)
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + n) / sample_rate / realtime - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the receiver run
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(receiver, timeout_s)
    return out


class SamplesTrack(MediaStreamTrack):
    """An audio track that plays `samples` in real time as 20 ms s16 frames at `rate`, then silence (a real mic)."""

    kind = "audio"

    def __init__(self, samples_16k: np.ndarray, rate: int = 48000, ptime_s: float = 0.02) -> None:
        super().__init__()
        self.rate = rate
        self.n = int(rate * ptime_s)
        self.pcm = (np.clip(resample(samples_16k.astype(np.float32), 16000, rate), -1, 1) * 32767).astype(np.int16)
        self.pos = 0
        self.t0: float | None = None

    @property
    def done(self) -> bool:
        return self.pos >= len(self.pcm)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.t0 + self.pos / self.rate - time.monotonic()))
        chunk = np.zeros(self.n, np.int16)
        piece = self.pcm[self.pos : self.pos + self.n]
        chunk[: len(piece)] = piece
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pos
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pos += self.n
        return frame


def envelope(x: np.ndarray, rate: int = 16000, win_s: float = 0.02) -> np.ndarray:
    n = int(rate * win_s)
    x = x[: len(x) // n * n].reshape(-1, n)
    return np.sqrt((x**2).mean(axis=1))


def best_envelope_correlation(sent: np.ndarray, received: np.ndarray, max_lag_s: float = 1.0) -> float:
    """Largest correlation of the 20 ms RMS envelopes over lags up to `max_lag_s` (the path adds delay)."""
    a, b = envelope(sent), envelope(received)
    best = -1.0
    for lag in range(0, int(max_lag_s / 0.02)):
        m = min(len(a), len(b) - lag)
        if m < 50:
            break
        c = np.corrcoef(a[:m], b[lag : lag + m])[0, 1]
        best = max(best, float(c))
    return best


_WORD = re.compile(r"[a-z']+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class LoopThread:
    """An event loop in a daemon thread; `run(coro)` waits for its result from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def server_in_thread(backend, max_sessions: int = 4, idle_timeout_s: float = 5.0) -> Iterator[Any]:
    """A DragomanServer on a free port with its Engine, running on a LoopThread (for tests that drive examples
    synchronously, such as hypothesis); stopped on exit."""
    from app.runtime import Engine, EngineConfig
    from app.server import DragomanServer, ServerConfig
    from app.server.limits import ServerLimits

    lt = LoopThread()
    engine = Engine(backend, EngineConfig(max_sessions=max_sessions))
    server = DragomanServer(engine, ServerConfig(port=0, server_limits=ServerLimits(idle_timeout_s=idle_timeout_s)))

    async def up() -> None:
        await engine.start()
        await server.start()

    lt.run(up())
    try:
        yield server
    finally:
        lt.run(server.stop())
        lt.run(engine.stop())
        lt.close()


async def ready(ws) -> dict:
    """Start a German session on an open caption socket; the server's `ready`."""
    await ws.send('{"type": "start", "language": "de"}')
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "ready", msg
    return msg


async def collect(ws, timeout_s: float = 30.0) -> tuple[list[dict], int | None]:
    """Every message until the server closes; and the close code."""
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for raw in ws:
                out.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return out, (ws.close_code if ws.close_code is not None else None)


@contextlib.asynccontextmanager
async def serving(backend, max_sessions: int = 3, **config) -> AsyncIterator[Any]:
    """A DragomanServer on a free port (ServerConfig(**config)) over its own Engine, stopped on exit."""
    from app.runtime import Engine, EngineConfig
    from app.server import DragomanServer, ServerConfig

    async with Engine(backend, EngineConfig(max_sessions=max_sessions)) as engine:
        async with DragomanServer(engine, ServerConfig(port=0, **config)) as server:
            yield server


async def junk_socket(
    url: str, sends: list, *, label: Callable[[dict], str | None], read_s: float, close_timeout_s: float
) -> list[str]:
    """A client that sends `sends` over a WebSocket and reads what comes back for `read_s`: label(message) for each
    message (None: not recorded), then how the socket ended badly: `close CODE` if the server closed it, `http
    STATUS` if it refused the handshake."""
    got: list[str] = []
    try:
        async with connect(url, max_size=2**20, close_timeout=close_timeout_s) as ws:
            for item in sends:
                await ws.send(item)
            try:
                async with asyncio.timeout(read_s):
                    async for raw in ws:
                        if (name := label(json.loads(raw))) is not None:
                            got.append(name)
            except TimeoutError:
                pass
    except ConnectionClosed as e:
        got.append(f"close {e.rcvd.code if e.rcvd else 1006}")
    except InvalidStatus as e:
        got.append(f"http {e.response.status_code}")
    return got


def upload_status(http_url: str, payload: bytes, name: str = "file") -> int:
    """POST `payload` as a multipart file (form field `name`) to http_url's /v1/audio/transcriptions (blocking): the
    HTTP status."""
    body = (
        f'--b\r\nContent-Disposition: form-data; name="{name}"; filename="x.wav"\r\n\r\n'.encode()
        + payload
        + b"\r\n--b--\r\n"
    )
    req = urllib.request.Request(
        http_url.rstrip("/") + "/v1/audio/transcriptions",
        data=body,
        method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
