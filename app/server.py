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
What keeps one client from taking more than its share (issue 7, limits in app/limits.py): message size is capped
by websockets before anything is buffered; messages and audio seconds per wall second go through token buckets,
and a client over its rate, or whose uncommitted audio exceeds `max_backlog_s`, is simply read more slowly (TCP
backpressure; nothing is dropped); idle connections and sessions past their time limit are flushed and closed.
Access (token, Origin) is checked at the handshake (app/auth.py).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from . import protocol as p
from .auth import AccessConfig, RedactingFilter, check_access
from .connection import Connection
from .limits import ServerLimits
from .static import WEB_DIR, http_response, static_response
from .webrtc import WebRTCConfig

if TYPE_CHECKING:
    from engine.scheduler import Engine
    from engine.session import SessionConfig

log = logging.getLogger(__name__)
# websockets' own logger for our servers; its DEBUG request lines would carry ?token= and Authorization headers,
# so a RedactingFilter sits on it while a server runs (see DragomanServer.start)
ws_log = logging.getLogger(__name__ + ".websockets")


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
    defaults: p.Start = p.Start()  # task/language for a `start` that omits them (`dragoman serve --task/--language`)
    server_limits: ServerLimits = ServerLimits()
    access: AccessConfig = AccessConfig()
    certfile: Path | None = None  # TLS certificate chain (PEM); with keyfile, serves https:// and wss://
    keyfile: Path | None = None


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"


@dataclass
class DragomanServer:
    """`async with DragomanServer(engine, config) as server:` serves until the block ends."""

    engine: Engine
    config: ServerConfig = field(default_factory=ServerConfig)
    _server: Server | None = field(default=None, init=False, repr=False)
    _connections: set[Connection] = field(default_factory=set, init=False, repr=False)
    _filter: RedactingFilter | None = field(default=None, init=False, repr=False)

    @property
    def tls(self) -> bool:
        return self.config.certfile is not None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):].rstrip("/") + self.config.ws_path

    @property
    def n_connections(self) -> int:
        return len(self._connections)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urllib.parse.urlsplit(request.path).path != self.config.ws_path:
            return static_response(self.config.web_dir, request.path)
        denial = check_access(self.config.access, request.headers, request.path, self.tls)
        if denial is not None:
            log.info("refused a WebSocket from %s: %d %s", _peer(connection), denial.status,
                     denial.reason.split(":")[0])
            response = http_response(denial.status, denial.reason.split(":")[0], (denial.reason + "\n").encode(),
                                 "text/plain; charset=utf-8")
            if denial.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="dragoman"'
            return response
        if len(self._connections) >= self.config.server_limits.max_connections:
            log.warning("refused a WebSocket from %s: %d connections open", _peer(connection), len(self._connections))
            return http_response(503, "Service Unavailable", b"too many connections, try again later\n",
                             "text/plain; charset=utf-8")
        return None  # go on with the WebSocket handshake

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(self, ws)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.certfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.certfile, self.config.keyfile)
        return context

    async def start(self) -> None:
        token = self.config.access.token
        self._filter = RedactingFilter((token,) if token else ())
        ws_log.addFilter(self._filter)
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            ssl=self._ssl_context(),
            logger=ws_log,
            # websockets enforces the size before our parser sees the message: a 50 MB frame is never buffered
            max_size=max(self.config.limits.max_text_bytes, self.config.limits.max_audio_frame_bytes),
            max_queue=self.config.server_limits.receive_queue,
        )
        log.info("serving %s (WebSocket %s)", self.url, self.ws_url)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Graceful stop: accept nobody new; every open session gets its final commits and `end`; then close.

        Connections still open after `timeout_s` (default ServerLimits.shutdown_timeout_s) are cut.
        """
        if self._server is None:
            return
        timeout_s = self.config.server_limits.shutdown_timeout_s if timeout_s is None else timeout_s
        self._server.close(close_connections=False)  # stop listening; open connections go on
        conns = list(self._connections)
        log.info("shutting down: ending %d connection(s)", len(conns))
        if conns:
            ends = [asyncio.ensure_future(c.end_by_server(p.ErrorCode.SHUTTING_DOWN, "the server is shutting down",
                                                          1001, "server shutting down")) for c in conns]
            await asyncio.wait(ends, timeout=timeout_s)
        for c in list(self._connections):
            c.ws.transport.abort()  # over the deadline
        await self._server.wait_closed()
        self._server = None
        self._remove_filter()

    async def stop(self) -> None:
        """Abrupt stop: open connections are closed (1001) without flushing their sessions. See shutdown()."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._remove_filter()

    def _remove_filter(self) -> None:
        if self._filter is not None:
            ws_log.removeFilter(self._filter)
            self._filter = None

    async def __aenter__(self) -> DragomanServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
