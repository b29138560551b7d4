"""WebSocket manners for Ray Serve's HTTP proxy: a proper refusal, and a proper close when a replica is lost.

Ray Serve's proxy forwards each WebSocket to a replica. Two of its answers reach a client badly (Ray 2.60, measured):
- when it refuses a handshake itself (every replica full and `max_queued_requests` waiting), it sends a plain HTTP
  503 response on the WebSocket scope, which uvicorn cannot send there: the client sees HTTP 500;
- when the replica serving an open socket dies, the proxy's handler just returns: the client sees the TCP connection
  drop without a close frame (1006), with no reason to show.
This middleware wraps the proxy's ASGI app and turns the first into the WebSocket denial response (the real 503,
Retry-After included) and the second into a close 1012 ("service restart") with a reason, which the page shows
while it reconnects, as it does for any server that goes away.

Installed through Ray's own hook: the proxy calls `middlewares()` when RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
names it (set by app/scale/ray_serve.py for the local cluster it starts; on a cluster of your own, set it on every
node, see docs/deploy.md). Only Starlette is imported here: this module runs inside the proxy process.
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CALLBACK_PATH = "app.scale.proxy.middlewares"  # the value for RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
REPLICA_LOST = (1012, "the replica serving this session stopped; reconnect to start a new one")


def middlewares() -> list[Middleware]:
    return [Middleware(WebSocketManners)]


class WebSocketManners:
    """Pure ASGI middleware; HTTP requests pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        can_deny = "websocket.http.response" in (scope.get("extensions") or {})
        state: dict[str, Any] = {"accepted": False, "over": False}

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                state["over"] = True
            return message

        async def mannered_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                state["accepted"] = True
            elif kind == "websocket.close":
                state["over"] = True
            elif kind.startswith("http.response.") and not state["accepted"]:
                # the proxy's own refusal of a handshake (backpressure, no replica): a denial response, else 1013
                if not can_deny:
                    if not state["over"]:
                        state["over"] = True
                        await send({"type": "websocket.close", "code": 1013, "reason": "try again later"})
                    return
                message = {**message, "type": "websocket." + kind}
                if kind == "http.response.body" and not message.get("more_body", False):
                    state["over"] = True
            await send(message)

        try:
            await self.app(scope, watched_receive, mannered_send)
        finally:
            if state["accepted"] and not state["over"]:  # the replica went away without closing
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": REPLICA_LOST[0], "reason": REPLICA_LOST[1]})
