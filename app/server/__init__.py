"""The server: Dragoman's caption protocol, the compatible APIs and the page over one ASGI application.

Layers, each importing only those below it:
    app.py        the ASGI application (routes, handshakes) and `DragomanServer`, which runs it under uvicorn
    api/          OpenAI's and Deepgram's APIs over the same connections
    connection.py one WebSocket client: its session on the engine, its send queue, its limits
    hub.py        the state every endpoint shares (engine, config, connections, rooms, metrics, file worker)
    asgi.py       the WebSocket adapter the connections run over, and the handshake's refusals
    config.py, protocol.py (sans-I/O wire format), rooms.py, mt.py, webrtc.py, auth.py, limits.py, files.py,
    metrics.py, static.py, sockets.py

`create_app`, `ServerConfig` and `DragomanServer` are reachable from here (docs/api.md: `from app.server import
ServerConfig, create_app`, `uvicorn --factory app.server:create_app`). They load on first use, so importing a
low layer such as `app.server.protocol` does not import the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import DragomanServer, create_app
    from .config import ServerConfig

__all__ = ["DragomanServer", "ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("DragomanServer", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
