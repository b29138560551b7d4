"""What a connection needs from a WebSocket, and nothing more: the seam between the framework-free connection logic
(connection.py, api/) and whichever server carries the bytes (app.py's ASGI adapter).

Keeping this small is what lets the same connection code run under uvicorn, under another ASGI server (Ray Serve)
or against a queue-pair double in tests.
"""

from __future__ import annotations

from typing import Protocol


class SocketClosed(Exception):
    """The WebSocket is closed (by either side, or cut): nothing more can be received or sent."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(f"WebSocket closed ({code})")
        self.code = code


class MessageSocket(Protocol):
    """An accepted WebSocket: whole messages in and out, a close with a code, and a hard cut."""

    @property
    def peer(self) -> str:
        """The client's address, for log lines."""
        ...

    @property
    def open(self) -> bool:
        """False once either side started closing, or the connection was cut."""
        ...

    async def recv(self) -> str | bytes:
        """The next whole message; raises SocketClosed when the connection is gone."""
        ...

    async def send(self, message: str | bytes) -> None:
        """Hand a message to the transport; waits while the client does not read (backpressure); SocketClosed."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (idempotent). Does not wait for the client's answer."""
        ...

    def abort(self) -> None:
        """Cut the connection at once, unread and unsent data included (a client that does not read)."""
        ...

    async def wait_closed(self) -> None:
        """Returns once the connection is known to be closed."""
        ...
