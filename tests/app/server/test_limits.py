"""Limits at the server's edge (app/server/limits.py): connection cap, idle and session timeouts, audio rate.

These need sessions to open but little or no model work (silence is skipped by the VAD), so they are quick.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.server.limits import ServerLimits
from tests.server_clients import collect, pcm16, ready, serving


async def test_connection_cap_answers_503(backend):
    """Past max_connections a handshake gets 503; once one closes, a new client gets in."""
    async with serving(backend, server_limits=ServerLimits(max_connections=2)) as srv:
        a = await connect(srv.ws_url)
        b = await connect(srv.ws_url)
        with pytest.raises(InvalidStatus) as refused:
            await connect(srv.ws_url)
        assert refused.value.response.status_code == 503
        await a.close()
        async with asyncio.timeout(5):
            while srv.n_connections > 1:
                await asyncio.sleep(0.02)
        async with connect(srv.ws_url) as c:
            await ready(c)
        await b.close()


async def test_idle_connection_is_flushed_and_closed(backend):
    """A session that receives nothing for idle_timeout_s gets `timeout`, then `end`, then a 1008 close."""
    async with serving(backend, server_limits=ServerLimits(idle_timeout_s=1.0)) as srv:
        async with connect(srv.ws_url) as ws:
            await ready(ws)
            await ws.send(pcm16(np.zeros(8000, np.float32)))
            t0 = time.monotonic()
            out, code = await collect(ws)
        assert 0.8 < time.monotonic() - t0 < 10
        assert [m["code"] for m in out if m["type"] == "error"] == ["timeout"]
        assert out[-1]["type"] == "end" and code == 1008
        async with connect(srv.ws_url) as idle:  # no session at all: closed the same way
            out, code = await collect(idle)
        assert [m.get("code") for m in out] == ["timeout"] and code == 1008
        assert srv.engine.n_sessions == 0


async def test_session_time_limit_flushes_and_closes(backend):
    """A session past max_session_s gets `timeout`, its final flush and `end`, although the client keeps sending."""
    async with serving(backend, server_limits=ServerLimits(max_session_s=1.5)) as srv:
        async with connect(srv.ws_url) as ws:
            await ready(ws)

            async def keep_sending() -> None:
                try:
                    for _ in range(200):
                        await ws.send(pcm16(np.zeros(320, np.float32)))
                        await asyncio.sleep(0.02)
                except ConnectionClosed:
                    pass

            sender = asyncio.ensure_future(keep_sending())
            out, code = await collect(ws)
            sender.cancel()
        codes = [m.get("code") for m in out if m["type"] == "error"]
        assert codes == ["timeout"] and out[-1]["type"] == "end" and code == 1008


async def test_audio_faster_than_the_limit_is_read_more_slowly(backend):
    """A client pushing 30 s of audio at once is admitted at max_realtime after its burst and told rate_limited."""
    limits = ServerLimits(max_realtime=2.0, burst_audio_s=1.0)
    async with serving(backend, server_limits=limits) as srv:
        async with connect(srv.ws_url, close_timeout=1) as ws:  # the server is not reading: no polite close
            await ready(ws)
            frames = [pcm16(np.zeros(1600, np.float32))] * 300  # 30 s in 0.1 s frames
            sender = asyncio.ensure_future(asyncio.gather(*(ws.send(f) for f in frames)))
            t0 = time.monotonic()
            async with asyncio.timeout(10):
                while (msg := json.loads(await ws.recv()))["type"] != "error":
                    pass
            assert msg["code"] == "rate_limited"
            await asyncio.sleep(2.0)
            live = next(iter(srv._connections)).live
            elapsed = time.monotonic() - t0
            assert live.audio_s <= 1.0 + 2.0 * elapsed + 0.2, (live.audio_s, elapsed)
            assert live.audio_s >= 1.0 + 2.0 * (elapsed - 0.6)  # throttled, not stalled
            sender.cancel()
            ws.transport.abort()  # a polite close would wait behind 25 s of unread audio
