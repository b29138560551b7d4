"""The state every endpoint of one server shares: the engine, the configuration, open connections, rooms, metrics
and the file worker.

Below the endpoints and the connections (they all hold the hub), so the hub knows a connection only by the little it
needs for gauges and shutdown (`OpenConnection`), never by importing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from starlette.datastructures import Headers
from starlette.types import Scope

from . import protocol as p
from .asgi import raw_target
from .auth import Denial, check_access
from .config import ServerConfig
from .files import FileJobs
from .metrics import Metrics
from .rooms import RoomRegistry
from .sockets import MessageSocket

if TYPE_CHECKING:
    from app.runtime import Engine, LiveSession

log = logging.getLogger("app.server")


class OpenConnection(Protocol):
    """What the hub sees of a connection (connection.py's `Connection` and its subclasses)."""

    ws: MessageSocket
    out: asyncio.Queue[Any]  # messages waiting to be sent
    live: LiveSession | None

    async def end_by_server(self, code: p.ErrorCode, message: str, close_code: int, reason: str) -> None: ...

    async def _close_socket(self, code: int, reason: str) -> None: ...


class DragomanHub:
    """The state every endpoint shares: the engine, the configuration, open connections, metrics, file jobs."""

    def __init__(self, engine: Engine | None, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.connections: set[OpenConnection] = set()
        self.rooms = RoomRegistry(config.rooms)
        self.metrics = Metrics()
        self.files = FileJobs(config.files.max_jobs)
        self.closing = False  # shutting down: no new connections or jobs
        self.secure = config.certfile is not None  # set by whoever terminates TLS (same origin checks)
        m = self.metrics
        m.gauge("dragoman_connections_open", "WebSocket connections open (all APIs)", lambda: len(self.connections))
        m.gauge(
            "dragoman_send_queue_messages",
            "Messages waiting in the send queues of all connections",
            lambda: sum(c.out.qsize() for c in list(self.connections)),
        )
        m.gauge(
            "dragoman_backlog_seconds",
            "Audio received but not yet committed, all live sessions",
            lambda: sum(c.live.lag_s for c in list(self.connections) if c.live is not None),
        )
        m.gauge("dragoman_file_jobs", "File transcriptions decoding or waiting", lambda: self.files.active)
        m.gauge("dragoman_viewers", "Viewers connected to rooms", lambda: self.rooms.n_viewers)
        m.gauge("dragoman_capacity_left", "Live session slots free", lambda: self.capacity_left)

    @property
    def capacity_left(self) -> int:
        if self.engine is None:
            return 0
        return max(0, self.engine.config.max_sessions - self.engine.n_sessions)

    @property
    def model_name(self) -> str:
        backend = getattr(self.engine, "backend", None)
        return str(getattr(backend, "name", None) or self.config.model_id)

    def check(self, scope: Scope) -> Denial | None:
        """Origin and token for any request (WebSocket or HTTP)."""
        return check_access(
            self.config.access,
            Headers(scope=scope),
            raw_target(scope),
            self.secure or scope.get("scheme") in ("https", "wss"),
        )

    async def end_connections(self, timeout_s: float) -> None:
        """Graceful stop of every open connection: `shutting_down`, final commits, `end`, close 1001."""
        conns = list(self.connections)
        log.info("shutting down: ending %d connection(s)", len(conns))
        if conns:
            ends = [
                asyncio.ensure_future(
                    c.end_by_server(
                        p.ErrorCode.SHUTTING_DOWN, "the server is shutting down", 1001, "server shutting down"
                    )
                )
                for c in conns
            ]
            await asyncio.wait(ends, timeout=timeout_s)
        for c in list(self.connections):
            c.ws.abort()  # over the deadline
        self.files.cancel_all()
