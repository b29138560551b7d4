"""What a server is told besides its engine: addresses, limits, access, TLS, defaults for sessions.

Kept apart from the ASGI application so that `dragoman serve` and the Ray Serve builder can assemble a
configuration without importing the web framework, and so that connections read it without importing the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import protocol as p
from .auth import AccessConfig
from .limits import FileLimits, ServerLimits
from .rooms import RoomLimits
from .static import WEB_DIR
from .webrtc import WebRTCConfig

if TYPE_CHECKING:
    from engine.streaming.config import SessionConfig

    from .mt import ServerTranslation


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
    files: FileLimits = FileLimits()
    model_id: str = "whisper-base"  # the name /v1/models lists; any model a client asks for is served by this one
    translation: ServerTranslation | None = None  # MT models and the targets `start.target` may ask for (mt.py)
    rooms: RoomLimits = RoomLimits()  # audiences of shared sessions (`start.room`, rooms.py)
    replica: str | None = None  # names this replica in `ready` and /healthz when several serve (app/scale/)
