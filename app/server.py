"""One `websockets` server on one port: the page from web/ over plain HTTP, and the caption protocol at /ws.

Each WebSocket connection drives its own LiveSession on the shared Engine. The protocol rules live in
app/protocol.py (sans-I/O); this module is the thin asyncio adapter around them. What keeps one client from
delaying another:
- nothing here awaits a client while holding shared state: engine events go into a bounded per-connection queue
  that a per-connection sender task drains;
- under backpressure partials and stats are dropped first (the next one supersedes them), commits never are;
  a client whose queue still overflows, or that does not accept a message within `send_timeout_s`, is closed
  with `slow_client`;
- model work happens in the engine's worker thread; `feed_audio` never blocks.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import posixpath
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.errors import AudioError, EngineError
from engine.events import Commit, Error, Partial

from . import protocol as p
from .webrtc import WebRTCAudioReceiver, WebRTCConfig

if TYPE_CHECKING:
    from engine.scheduler import Engine, LiveSession
    from engine.session import SessionConfig

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# Only these file types are served; anything else in web/ is a 404 rather than a guess.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # also required for ES modules and AudioWorklet modules
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs besides the engine."""

    host: str = "127.0.0.1"  # loopback by default: exposing the server is an explicit choice
    port: int = 8000  # 0 picks a free port (tests); `DragomanServer.port` tells which
    web_dir: Path = WEB_DIR  # static files for the page
    ws_path: str = "/ws"
    limits: p.ProtocolLimits = p.ProtocolLimits()
    send_queue_messages: int = 256  # per connection; partials/stats are dropped once it is half full
    send_timeout_s: float = 10.0  # a client that accepts no message for this long is closed as slow
    stats_interval_s: float = 1.0  # how often each session reports lag and real-time factor
    webrtc: WebRTCConfig = WebRTCConfig()
    session: SessionConfig | None = None  # template for policy, chunking, ...; task/language come from `start`


# --- static files -------------------------------------------------------------------------------------------------

def resolve_static(web_dir: Path, raw_path: str) -> Path | None:
    """The file under `web_dir` a request path names, or None (missing, hidden, outside web_dir, unknown type)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    if path.endswith("/"):
        path += "index.html"
    # normpath collapses '..' lexically; any segment that still climbs or hides (".git", "..") is refused
    parts = [s for s in path.split("/") if s]
    if any(s.startswith(".") for s in parts) or posixpath.normpath(path) != "/" + "/".join(parts):
        return None
    root = web_dir.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file() or candidate.suffix not in MIME_TYPES:
        return None
    return candidate


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-cache"),  # the page is tiny; always revalidate so upgrades show at once
        ("X-Content-Type-Options", "nosniff"),
        ("Connection", "close"),
    ])
    return Response(status, reason, headers, body)


def static_response(web_dir: Path, raw_path: str) -> Response:
    """An HTTP response for a GET of `raw_path` from `web_dir`: the file with its MIME type, or a 404."""
    file = resolve_static(web_dir, raw_path)
    if file is None:
        return _response(404, "Not Found", b"404 not found\n", "text/plain; charset=utf-8")
    return _response(200, "OK", file.read_bytes(), MIME_TYPES[file.suffix])


# --- one connection -----------------------------------------------------------------------------------------------

class _Connection:
    """One WebSocket client: protocol state, its live session, its outgoing queue and its tasks."""

    def __init__(self, server: DragomanServer, ws: ServerConnection) -> None:
        self.server = server
        self.config = server.config
        self.ws = ws
        self.proto = p.ConnectionProtocol(self.config.limits)
        self.out: asyncio.Queue[str] = asyncio.Queue(maxsize=self.config.send_queue_messages)
        self.live: LiveSession | None = None
        self.rtc: WebRTCAudioReceiver | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.prefix = f"[{ws.remote_address[0] if ws.remote_address else '?'}] "
        self.dropped = 0  # partial/stats messages dropped under backpressure
        self.cut_off = False  # the client was too slow: nothing more is queued, the connection is closing

    # outgoing ----------------------------------------------------------------------------------------------------

    def post(self, message: str) -> None:
        """Queue a message for the client without waiting; never blocks the caller."""
        kind = p.message_type(message)
        droppable = kind in ("partial", "stats")
        if droppable and self.out.qsize() >= self.out.maxsize // 2:
            self.dropped += 1  # a later partial/stats supersedes this one; keep room for commits
            return
        if self.cut_off:
            return
        try:
            self.out.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("%sclient does not read its captions; closing", self.prefix)
            self.cut_off = True
            self._spawn(self.ws.close(1008, "slow_client: captions are not being read"))

    async def _send_loop(self) -> None:
        while True:
            message = await self.out.get()
            try:
                await asyncio.wait_for(self.ws.send(message), self.config.send_timeout_s)
            except TimeoutError:
                log.warning("%sclient accepted nothing for %.0f s; closing", self.prefix, self.config.send_timeout_s)
                self.ws.transport.abort()  # a polite close would wait on the same stuck socket
                return
            except ConnectionClosed:
                return

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def error(self, code: p.ErrorCode | str, message: str) -> None:
        self.post(p.error_message(code, message))

    # incoming ----------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.ensure_future(self._send_loop())
        try:
            async for message in self.ws:
                try:
                    if isinstance(message, str):
                        await self._on_text(message)
                    else:
                        self._on_binary(message)
                except p.ProtocolError as e:
                    log.debug("%sprotocol error %s: %s", self.prefix, e.code.value, e.message)
                    self.error(e.code, e.message)
                    if e.fatal:
                        await self.ws.close(1008, e.code.value)
        except ConnectionClosed:
            pass
        finally:
            # the socket is closed by now: whatever is still queued has nobody to go to
            await self._teardown()
            sender.cancel()

    async def _on_text(self, text: str) -> None:
        message = self.proto.receive_text(text)
        if isinstance(message, p.Start):
            self._start(message)
        elif isinstance(message, p.Stop):
            await self._stop()
        elif isinstance(message, p.Offer):
            await self._offer(message)
        elif isinstance(message, p.Ice):
            if self.rtc is None:
                raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, "ICE candidate before an offer")
            try:
                await self.rtc.add_candidate(message)
            except Exception as e:  # a malformed candidate line from aiortc's parser
                raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, f"bad ICE candidate: {e}") from None

    def _on_binary(self, data: bytes) -> None:
        if self.proto.webrtc:
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, "this session takes audio over WebRTC, not binary frames")
        audio = self.proto.receive_binary(data)
        self._feed(audio.samples, audio.sample_rate)

    def _feed(self, samples: np.ndarray, sample_rate: int) -> None:
        if self.live is None:
            return
        try:
            # any rate: the session resamples to the model's rate with filter state kept across frames
            self.live.feed_audio(samples, sample_rate)
        except AudioError as e:
            self.error(p.ErrorCode.BAD_AUDIO, str(e))
        except EngineError as e:  # audio racing a stop: nothing to do but say so
            log.debug("%saudio refused: %s", self.prefix, e)

    # session lifecycle -------------------------------------------------------------------------------------------

    def _start(self, start: p.Start) -> None:
        from engine.scheduler import EngineBusy

        languages = getattr(getattr(self.server.engine.backend, "tokenizer", None), "language_ids", None)
        if start.language is not None and languages is not None and start.language not in languages:
            # checked here: in the engine's worker it would only surface later as an `internal` failure
            self.proto.session_ended()
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, f"the model does not know language {start.language!r}; "
                                                           "use a code such as de, fr, es, or null to detect")
        template = self.config.session
        if template is None:
            from engine.session import SessionConfig

            session_config = SessionConfig(task=start.task, language=start.language)
        else:
            session_config = dataclasses.replace(template, task=start.task, language=start.language)
        try:
            live = self.server.engine.open_session(session_config)
        except EngineBusy as e:
            self.proto.session_ended()
            raise p.ProtocolError(p.ErrorCode.BUSY, f"the server is at its session limit, try again later ({e})")
        except EngineError as e:
            self.proto.session_ended()
            raise p.ProtocolError(p.ErrorCode.BAD_MESSAGE, str(e)) from None
        self.live = live
        self.prefix = f"[{live.id}] "
        log.info("%ssession started: task=%s language=%s rate=%d %s", self.prefix, start.task,
                 start.language or "auto", start.sample_rate, start.encoding)
        self.post(p.ready_message(str(live.id), [s.to_browser() for s in self.config.webrtc.ice_servers]))
        self._spawn(self._pump(live))
        self._spawn(self._stats(live))

    async def _pump(self, live: LiveSession) -> None:
        """Forward the session's events to the client; after the final flush, send `end`."""
        try:
            async for event in live.events():
                if isinstance(event, Commit):
                    self.post(p.commit_message(event.text, event.start_s, event.end_s))
                elif isinstance(event, Partial):
                    self.post(p.partial_message(event.text, event.start_s, event.end_s))
                elif isinstance(event, Error):
                    self.post(p.error_message(event.code, event.message))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # contained: this session ends, the server goes on
            log.exception("%ssession failed", self.prefix)
            self.error(p.ErrorCode.INTERNAL, f"the session failed: {e}")
        if self.live is live:
            self.post(p.stats_message(live.lag_s, live.rtf, live.audio_s))
            self.post(p.end_message())
            log.info("%ssession ended: %.1f s of audio, rtf %.2f", self.prefix, live.audio_s, live.rtf)
            await self._close_session()

    async def _stats(self, live: LiveSession) -> None:
        while self.live is live:
            await asyncio.sleep(self.config.stats_interval_s)
            if self.live is live and live.audio_s > 0:
                self.post(p.stats_message(live.lag_s, live.rtf, live.audio_s))

    async def _stop(self) -> None:
        live = self.live
        if live is None:
            return
        if self.rtc is not None:
            await self.rtc.close()  # no more audio after stop; what is buffered in the engine still gets decoded
        # finish() flushes in the engine; the pump sends the final commits and `end` once events() ends
        self._spawn(self._finish(live))

    async def _finish(self, live: LiveSession) -> None:
        try:
            await live.finish()
        except EngineError as e:
            self.error(p.ErrorCode.INTERNAL, f"the session could not be finished: {e}")

    async def _offer(self, offer: p.Offer) -> None:
        live = self.live
        assert live is not None  # the protocol allows offers only while streaming

        def failed(message: str) -> None:
            self.error(p.ErrorCode.WEBRTC_FAILED, message)

        self.rtc = WebRTCAudioReceiver(self.config.webrtc, on_audio=self._feed, on_failure=failed,
                                       log_prefix=self.prefix)
        try:
            answer = await self.rtc.accept(offer.sdp)
        except Exception as e:
            log.info("%sWebRTC offer refused: %s", self.prefix, e)
            await self.rtc.close()
            self.rtc = None
            raise p.ProtocolError(p.ErrorCode.WEBRTC_FAILED, f"cannot answer the WebRTC offer: {e}") from None
        self.post(p.answer_message(answer))

    async def _close_session(self) -> None:
        live, rtc = self.live, self.rtc
        self.live, self.rtc = None, None
        self.proto.session_ended()
        if rtc is not None:
            await rtc.close()
        if live is not None:
            live.close()

    async def _teardown(self) -> None:
        """The client went away (or the server stops): abandon the session without waiting for a flush."""
        await self._close_session()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


# --- the server ---------------------------------------------------------------------------------------------------

@dataclass
class DragomanServer:
    """`async with DragomanServer(engine, config) as server:` serves until the block ends."""

    engine: Engine
    config: ServerConfig = field(default_factory=ServerConfig)
    _server: Server | None = field(default=None, init=False, repr=False)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
        return f"http://{shown}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).rstrip("/") + self.config.ws_path

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urllib.parse.urlsplit(request.path).path == self.config.ws_path:
            return None  # go on with the WebSocket handshake
        return static_response(self.config.web_dir, request.path)

    async def _handle(self, ws: ServerConnection) -> None:
        await _Connection(self, ws).run()

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            # websockets enforces the size before our parser sees the message: a 50 MB frame is never buffered
            max_size=max(self.config.limits.max_text_bytes, self.config.limits.max_audio_frame_bytes),
        )
        log.info("serving %s (WebSocket %s)", self.url, self.ws_url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DragomanServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
