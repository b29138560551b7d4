"""The server: one ASGI application (Starlette) on one port, served by uvicorn.

It carries
- the page from web/ (GET), Dragoman's own caption protocol at /ws (docs/protocol.md) with WebRTC signalling on it;
- the APIs existing clients speak (docs/api.md): OpenAI's audio endpoints (api/openai.py) and Realtime
  transcription socket (api/realtime.py), Deepgram's live socket (api/deepgram.py);
- operations: /healthz for load balancers, /metrics for Prometheus.

`create_app(engine, config)` returns the ASGI app, to run under any ASGI server or mount elsewhere (Ray Serve);
`DragomanServer` runs it under uvicorn for `dragoman serve` and the tests.

Each WebSocket drives its sessions on the shared Engine through a framework-free connection (connection.py)
over `AsgiSocket`, the thin adapter in asgi.py. What keeps one client from delaying another:
- nothing awaits a client while holding shared state: engine events go into a bounded per-connection queue that a
  per-connection sender task drains;
- under backpressure partials and stats are dropped first (the next one supersedes them), commits never are;
  a client whose queue still overflows, or that does not accept a message within `send_timeout_s`, is closed
  with `slow_client`;
- model work happens in the engine's worker thread (live sessions) or the file worker (uploads); the event loop
  never runs the model.
What keeps one client from taking more than its share (issue 7, limits in limits.py): message size is capped by
uvicorn before anything is buffered (`ws_max_size`, close 1009), and uvicorn stops reading a socket until the app
took its last message, so TCP pushes back; messages and audio seconds per wall second go through token buckets;
a client over its rate, or whose uncommitted audio exceeds `max_backlog_s`, is simply read more slowly; idle
connections and sessions past their time limit are flushed and closed. Uploads are capped in bytes and audio
seconds, and file jobs queue in a bounded line (429 beyond). Access (token, Origin) is checked before a WebSocket
is accepted or a request body is read (auth.py). The state every endpoint shares is the hub (hub.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from .api import deepgram, openai, realtime
from .api.common import HandshakeRefused
from .asgi import AsgiSocket, deny, raw_target, uvicorn_protocol
from .auth import AccessConfig, Denial, RedactingFilter, check_access, request_token, subprotocol_token
from .config import ServerConfig
from .connection import Connection
from .hub import DragomanHub, OpenConnection
from .metrics import CONTENT_TYPE
from .rooms import serve_viewer
from .static import http_response, static_response

if TYPE_CHECKING:
    from app.runtime import Engine

log = logging.getLogger("app.server")  # the package's logger: one story for the app and its connections
# uvicorn's own loggers: their request lines carry ?token=, so a RedactingFilter sits on them while a server runs
UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")
http_log = logging.getLogger("app.server.http")


# --- the application ----------------------------------------------------------------------------------------------


async def watch_endpoint(hub: DragomanHub, scope: Scope, receive: Receive, send: Send) -> None:
    """A viewer's socket, /ws/watch/ROOM?token=VIEWER_TOKEN: read-only captions of one room (rooms.py).

    The viewer token replaces the server token here (viewers are given the link, not the speaker's token); it opens
    this one room and nothing else. The Origin rule is the same as for /ws.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    peer = (scope.get("client") or ("?",))[0]
    headers = Headers(scope=scope)
    denial = check_access(
        AccessConfig(allowed_origins=hub.config.access.allowed_origins),
        headers,
        raw_target(scope),
        hub.secure or scope.get("scheme") in ("https", "wss"),
    )
    room = hub.rooms.get(scope["path_params"]["room"])
    if denial is None and (room is None or not room.check(request_token(headers, raw_target(scope)))):
        # unknown room and wrong token look the same: a guessed room id learns nothing
        denial = Denial(401, "Unauthorized: no such room, or a wrong viewer token (the link may have expired)")
    if denial is not None:
        log.info("refused a viewer from %s: %d", peer, denial.status)
        hub.metrics.error("unauthorized" if denial.status == 401 else "forbidden")
        await deny(scope, send, denial.status, denial.reason)
        return
    assert room is not None
    if hub.closing or len(room.viewers) >= room.limits.max_viewers:
        log.warning("refused a viewer from %s: room %s has %d viewers", peer, room.id, len(room.viewers))
        await deny(scope, send, 503, f"this room is full ({room.limits.max_viewers} viewers)")
        return
    sock = AsgiSocket(scope, receive, send)
    await send({"type": "websocket.accept"})
    await serve_viewer(room, sock)


class WatchEndpoint:
    """`watch_endpoint` as an ASGI app (Starlette wraps plain functions and partials as WebSocket handlers)."""

    def __init__(self, hub: DragomanHub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await watch_endpoint(self.hub, scope, receive, send)


ConnectionFactory = Callable[[DragomanHub, AsgiSocket, Scope], Connection]


class SocketEndpoint:
    """An ASGI WebSocket endpoint: access checks and the connection cap at the handshake, then one Connection."""

    def __init__(self, hub: DragomanHub, factory: ConnectionFactory) -> None:
        self.hub, self.factory = hub, factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.hub
        if (await receive())["type"] != "websocket.connect":
            return
        peer = (scope.get("client") or ("?",))[0]
        http_log.debug(
            "WebSocket %s from %s; headers: %s",
            raw_target(scope),
            peer,
            ", ".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in scope["headers"]),
        )
        denial = hub.check(scope)
        if denial is not None:
            reason = denial.reason.split(":")[0]
            log.info("refused a WebSocket from %s: %d %s", peer, denial.status, reason)
            hub.metrics.error("unauthorized" if denial.status == 401 else "forbidden")
            extra = {"www-authenticate": 'Bearer realm="dragoman"'} if denial.status == 401 else None
            await deny(scope, send, denial.status, denial.reason, extra)
            return
        if hub.closing or len(hub.connections) >= self.hub.config.server_limits.max_connections:
            log.warning("refused a WebSocket from %s: %d connections open", peer, len(hub.connections))
            await deny(scope, send, 503, "too many connections, try again later")
            return
        if hub.engine is None:
            await deny(scope, send, 503, "no model is loaded")
            return
        sock = AsgiSocket(scope, receive, send)
        try:
            conn = self.factory(hub, sock, scope)  # a compatible API's query parameters are checked here
        except HandshakeRefused as e:
            log.info("refused a WebSocket from %s: %d %s", peer, e.status, e.message)
            await deny(scope, send, e.status, e.message)
            return
        offered = subprotocol_token(Headers(scope=scope))  # a browser that authenticated with `token, T`
        await send({"type": "websocket.accept", **({"subprotocol": offered[0]} if offered else {})})
        hub.connections.add(conn)
        try:
            await conn.run()
        finally:
            hub.connections.discard(conn)
            if sock.open:
                await sock.close(1000, "")


def create_app(
    engine: Engine | None = None, config: ServerConfig | None = None, *, hub: DragomanHub | None = None
) -> Starlette:
    """The whole server as an ASGI application.

    The engine is started by the caller (`async with Engine(...)`), or else by the app's lifespan when its ASGI server
    runs one. Without an engine (`uvicorn --factory app.server:create_app`), the lifespan loads the model named by
    DRAGOMAN_MODEL (default: the embedded one) into an Engine of DRAGOMAN_MAX_SESSIONS sessions (default 4), and the
    token comes from DRAGOMAN_TOKEN.
    """
    if config is None:
        config = ServerConfig(access=AccessConfig(token=os.environ.get("DRAGOMAN_TOKEN") or None))
    load_own_engine = engine is None and hub is None
    hub = hub or DragomanHub(engine, config)

    async def page(request: Request) -> Response:
        return static_response(config.web_dir, raw_target(request.scope))

    async def upgrade_required(request: Request) -> Response:
        return http_response(
            426, b"this is a WebSocket endpoint\n", "text/plain; charset=utf-8", {"Upgrade": "websocket"}
        )

    async def healthz(request: Request) -> Response:
        """Readiness for load balancers: 200 with capacity left, else 503 (full, shutting down, no model)."""
        loaded = hub.engine is not None
        ready = loaded and not hub.closing and hub.capacity_left > 0
        body = {
            "status": "ok" if ready else ("shutting_down" if hub.closing else "busy" if loaded else "loading"),
            "model": hub.model_name if loaded else None,
            "model_loaded": loaded,
            "sessions": hub.engine.n_sessions if loaded else 0,
            "max_sessions": hub.engine.config.max_sessions if loaded else 0,
            "capacity_left": hub.capacity_left,
            "connections": len(hub.connections),
            "file_jobs": hub.files.active,
            **({"replica": config.replica, "pid": os.getpid()} if config.replica is not None else {}),
        }
        return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})

    async def live(request: Request) -> Response:
        """Liveness: the process answers (restart it only when this fails)."""
        return JSONResponse({"status": "alive"}, headers={"Cache-Control": "no-store"})

    async def targets(request: Request) -> Response:
        """The caption languages `start.target` may ask for (the page's "Captions in" selector)."""
        tr = config.translation
        return JSONResponse(
            {"targets": list(tr.targets) if tr else [], "models": [m.name for m in tr.models] if tr else []},
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(request: Request) -> Response:
        denial = hub.check(request.scope)
        if denial is not None:
            return http_response(denial.status, (denial.reason + "\n").encode(), "text/plain; charset=utf-8")
        return Response(hub.metrics.render(), media_type=CONTENT_TYPE)

    async def watch_page(request: Request) -> Response:
        """/watch/ROOM: the audience page (it reads the room and token from its own address)."""
        return static_response(config.web_dir, "/watch.html")

    def native(h: DragomanHub, sock: AsgiSocket, scope: Scope) -> Connection:
        return Connection(h, sock)

    routes = [
        WebSocketRoute(config.ws_path, SocketEndpoint(hub, native)),
        WebSocketRoute("/ws/watch/{room}", WatchEndpoint(hub)),
        WebSocketRoute("/v1/realtime", SocketEndpoint(hub, realtime.RealtimeConnection.from_scope)),
        WebSocketRoute("/v1/listen", SocketEndpoint(hub, deepgram.ListenConnection.from_scope)),
        Route(config.ws_path, upgrade_required),
        Route("/v1/realtime", upgrade_required),
        Route("/v1/listen", upgrade_required),
        Route("/watch/{room}", watch_page, methods=["GET", "HEAD"]),
        Route("/healthz", healthz),
        Route("/healthz/live", live),
        Route("/metrics", metrics),
        Route("/v1/targets", targets),
        *openai.routes(hub),
        Route("/{path:path}", page, methods=["GET", "HEAD"]),
    ]

    started: list[Engine] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_own_engine:
            hub.engine = await asyncio.to_thread(_engine_from_environment)
        if hub.engine is not None and getattr(hub.engine, "_thread", None) is None:
            await hub.engine.start()  # mounted elsewhere: the app owns the engine's lifetime
            started.append(hub.engine)
        yield
        hub.closing = True
        await hub.end_connections(config.server_limits.shutdown_timeout_s)
        for e in started:
            await e.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dragoman = hub
    return app


def _engine_from_environment() -> Engine:
    from app.runtime import Engine, EngineConfig
    from engine.backend import make_backend
    from engine.models.loading import load_model

    backend = make_backend(load_model(os.environ.get("DRAGOMAN_MODEL") or None))
    return Engine(backend, EngineConfig(max_sessions=int(os.environ.get("DRAGOMAN_MAX_SESSIONS", "4"))))


# --- running it under uvicorn -------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=512)
    sock.setblocking(False)
    return sock


@dataclass
class DragomanServer:
    """`async with DragomanServer(engine, config) as server:` serves until the block ends."""

    engine: Engine | None
    config: ServerConfig = field(default_factory=ServerConfig)
    hub: DragomanHub = field(init=False, repr=False)
    app: Starlette = field(init=False, repr=False)
    _uvicorn: Any = field(default=None, init=False, repr=False)
    _socket: socket.socket | None = field(default=None, init=False, repr=False)
    _main: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _filter: RedactingFilter | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.hub = DragomanHub(self.engine, self.config)
        self.app = create_app(self.engine, self.config, hub=self.hub)

    @property
    def _connections(self) -> set[OpenConnection]:
        return self.hub.connections

    @property
    def tls(self) -> bool:
        return self.config.certfile is not None

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() the server first"
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :].rstrip("/") + self.config.ws_path

    @property
    def n_connections(self) -> int:
        return len(self.hub.connections)

    def _ssl_context(self, *_: object) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.certfile, self.config.keyfile)  # type: ignore[arg-type]
        return context

    async def start(self) -> None:
        import uvicorn

        token = self.config.access.token
        self._filter = RedactingFilter((token,) if token else ())
        for name in (*UVICORN_LOGGERS, http_log.name):
            logging.getLogger(name).addFilter(self._filter)
        limits = self.config.limits
        uv_config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="off",
            ws=uvicorn_protocol(),
            http="h11",  # not "auto": installing the ray extra brings httptools, which would change the HTTP parser
            # uvicorn enforces the size before our parser sees the message: a 50 MB frame is never buffered (1009)
            ws_max_size=max(limits.max_text_bytes, limits.max_audio_frame_bytes),
            ws_per_message_deflate=False,  # compressed audio frames would cost CPU for nothing; bombs stay out
            ssl_context_factory=self._ssl_context if self.tls else None,
            ssl_certfile=self.config.certfile,
            ssl_keyfile=self.config.keyfile,
            timeout_graceful_shutdown=5,
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=self.config.server_limits.max_connections + 64,
        )
        uv_config.load()
        server = uvicorn.Server(uv_config)
        server.lifespan = uv_config.lifespan_class(uv_config)
        self._socket = _bind(self.config.host, self.config.port)
        try:
            await server.startup(sockets=[self._socket])
        except BaseException:
            self._socket.close()
            raise
        self._uvicorn = server
        self._main = asyncio.ensure_future(server.main_loop())
        log.info("serving %s (WebSocket %s)", self.url, self.ws_url)

    def _stop_listening(self) -> None:
        for s in self._uvicorn.servers:
            s.close()  # open connections go on

    async def _stop_uvicorn(self, grace_s: float) -> None:
        server, self._uvicorn = self._uvicorn, None
        server.config.timeout_graceful_shutdown = grace_s
        server.should_exit = True
        if self._main is not None:
            await self._main
            self._main = None
        await server.shutdown()
        if self._socket is not None:
            self._socket.close()
        self._remove_filter()

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Graceful stop: accept nobody new; every open session gets its final commits and `end`; then close.

        Connections still open after `timeout_s` (default ServerLimits.shutdown_timeout_s) are cut.
        """
        if self._uvicorn is None:
            return
        timeout_s = self.config.server_limits.shutdown_timeout_s if timeout_s is None else timeout_s
        self.hub.closing = True
        self._stop_listening()
        await self.hub.end_connections(timeout_s)
        await self._stop_uvicorn(grace_s=2)

    async def stop(self) -> None:
        """Abrupt stop: open connections are closed (1001) without flushing their sessions. See shutdown()."""
        if self._uvicorn is None:
            return
        self.hub.closing = True
        self._stop_listening()
        closes = [asyncio.ensure_future(c._close_socket(1001, "server stopping")) for c in list(self.hub.connections)]
        if closes:
            await asyncio.wait(closes, timeout=2)
        self.hub.files.cancel_all()
        await self._stop_uvicorn(grace_s=2)

    def _remove_filter(self) -> None:
        if self._filter is not None:
            for name in (*UVICORN_LOGGERS, http_log.name):
                logging.getLogger(name).removeFilter(self._filter)
            self._filter = None

    async def __aenter__(self) -> DragomanServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
