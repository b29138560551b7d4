"""ASGI details the endpoints need: a request's raw target, the WebSocket adapter the connections run over, and
refusing a handshake with an HTTP status.

`AsgiSocket` is the server's one `sockets.MessageSocket`: the connections (connection.py, api/) know only that
Protocol, so they stay framework-free. uvicorn is named here only for the hard cut it can give (see AsgiSocket).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send

from .sockets import SocketClosed


def raw_target(scope: Scope) -> str:
    """The request's path and query as sent (percent-encoding intact), for access checks and static files."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    return raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


class AsgiSocket:
    """`sockets.MessageSocket` over an accepted ASGI WebSocket.

    A hard cut needs the transport, which ASGI does not expose: uvicorn (as run by DragomanServer) hands it over
    through the `dragoman.abort` scope extension. Under another server a cut is a close the app stops waiting for.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        client = scope.get("client")
        self.peer = str(client[0]) if client else "?"
        self._abort = (scope.get("extensions") or {}).get("dragoman.abort", {}).get("abort")
        self._closing = False  # a close frame was sent or received, or the connection was cut
        self._gone = asyncio.Event()  # the server (uvicorn) reported the disconnect, or we cut it
        self.close_code: int | None = None

    @property
    def open(self) -> bool:
        return not self._closing and not self._gone.is_set()

    async def recv(self) -> str | bytes:
        if self._gone.is_set():
            raise SocketClosed(self.close_code)
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.close_code = message.get("code", 1005)
            self._closing = True
            self._gone.set()
            raise SocketClosed(self.close_code)
        text = message.get("text")
        return text if text is not None else (message.get("bytes") or b"")

    async def send(self, message: str | bytes) -> None:
        if not self.open:
            raise SocketClosed(self.close_code)
        event = (
            {"type": "websocket.send", "text": message}
            if isinstance(message, str)
            else {"type": "websocket.send", "bytes": message}
        )
        try:
            await self._send(event)
        except (OSError, RuntimeError) as e:  # uvicorn's ClientDisconnected is an OSError
            self._closing = True
            self._gone.set()
            raise SocketClosed(self.close_code) from e

    async def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        except (OSError, RuntimeError):
            self._gone.set()

    def abort(self) -> None:
        self._closing = True
        self._gone.set()
        if self._abort is not None:
            self._abort()

    async def wait_closed(self) -> None:
        await self._gone.wait()


def uvicorn_protocol() -> type:
    """uvicorn's WebSocket protocol, handing the transport's abort to the app (see AsgiSocket)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class DragomanWebSocketProtocol(WebSocketsSansIOProtocol):
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # (None when the handshake was refused before a scope existed)
                scope["extensions"]["dragoman.abort"] = {"abort": self.transport.abort}

    return DragomanWebSocketProtocol


async def deny(scope: Scope, send: Send, status: int, body: str, headers: dict[str, str] | None = None) -> None:
    """Refuse a WebSocket handshake with an HTTP status (the ASGI denial-response extension, else a plain 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        all_headers = {"content-type": "text/plain; charset=utf-8", "referrer-policy": "no-referrer", **(headers or {})}
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in all_headers.items()],
            }
        )
        await send({"type": "websocket.http.response.body", "body": (body + "\n").encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})
