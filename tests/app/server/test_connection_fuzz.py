"""Property-based test over a real server: random message sequences over real WebSockets never crash a connection
handler or the server; every reply is a well-formed server message; afterwards a normal session still works.

The server runs on its own event loop in a thread (hypothesis drives examples synchronously); 300 sequences.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.server.protocol import ErrorCode
from tests.app.server.test_protocol_fuzz import actions
from tests.server_clients import server_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
# every message type app/server/protocol.py writes (target_* only with --target, which this server lacks)
SERVER_TYPES = {"ready", "partial", "commit", "stats", "answer", "error", "end", "language", "restarted"}
CODES = {c.value for c in ErrorCode} | {"internal"}


@pytest.fixture(scope="module")
def live_server(backend):
    with server_in_thread(backend) as server:
        yield server


MARKER = '{"type":"fuzz-marker"}'  # answered with unknown_type after everything sent before it


async def exchange(url: str, steps: list[tuple[str, object]]) -> list[dict]:
    """Send the steps, `stop` and a marker; collect replies up to the marker's, then until `end` if a session ran."""
    replies: list[dict] = []
    try:
        async with connect(url, max_size=2**20, close_timeout=2) as ws:
            for kind, payload in steps:
                if kind != "ended":
                    await ws.send(payload)
            await ws.send('{"type":"stop"}')
            await ws.send(MARKER)
            marker_seen = False
            async with asyncio.timeout(30):
                while True:
                    raw = await ws.recv()
                    assert isinstance(raw, str), "the server only sends text"
                    replies.append(json.loads(raw))
                    marker_seen |= "fuzz-marker" in replies[-1].get("message", "")
                    session = any(r["type"] == "ready" for r in replies)
                    if replies[-1]["type"] == "end" or (marker_seen and not session):
                        break
    except ConnectionClosed as e:
        assert e.rcvd is None or e.rcvd.code in (1000, 1001, 1008, 1009), e
    return replies


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(actions, max_size=25))
def test_random_message_sequences_over_a_real_socket(live_server, steps):
    """Whatever a client sends, replies are well-formed server messages with known codes and the handler survives."""
    lt_loop = live_server.engine._loop
    replies = asyncio.run_coroutine_threadsafe(exchange(live_server.ws_url, steps), lt_loop).result(60)
    for r in replies:
        assert r["type"] in SERVER_TYPES, r
        if r["type"] == "error":
            assert r["code"] in CODES and isinstance(r["message"], str), r
    if any(r["type"] == "ready" for r in replies):
        assert replies[-1]["type"] == "end" or any(r["type"] == "error" for r in replies)


def test_server_still_serves_after_the_fuzzing(live_server):
    """After the random sequences every session slot is free again and a clean session opens and ends."""
    loop = live_server.engine._loop

    async def clean() -> list[dict]:
        for _ in range(100):
            if live_server.engine.n_sessions == 0 and live_server.n_connections == 0:
                break
            await asyncio.sleep(0.1)
        return await exchange(live_server.ws_url, [("text", '{"type":"start"}'), ("binary", b"\0\0" * 1600)])

    replies = asyncio.run_coroutine_threadsafe(clean(), loop).result(60)
    assert [r["type"] for r in replies][0] == "ready" and replies[-1]["type"] == "end"
    assert live_server.engine.n_sessions == 0
