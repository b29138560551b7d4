"""benchmarks/bench_viewers.py measures what it says: with the scripted engine of tests/app/server/test_rooms.py (one commit per
0.1 s of audio), a round reports every speaker commit with its latency, and every viewer complete."""

from __future__ import annotations

import numpy as np

from app.server import DragomanServer, ServerConfig
from benchmarks.bench_viewers import run_round, table
from tests.app.server.test_rooms import FakeEngine


async def test_a_round_with_viewers_counts_every_commit():
    async with DragomanServer(FakeEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        alone = await run_round(server.ws_url, np.zeros(16000 * 2, np.float32), 0)
        crowd = await run_round(server.ws_url, np.zeros(16000 * 2, np.float32), 30)
    assert alone.commits == crowd.commits == 20
    assert crowd.complete == 30 and len(crowd.viewer_delay_s) == 30 * 20
    assert all(0 <= x < 2 for x in alone.latency_s + crowd.latency_s), (alone.latency_s, crowd.latency_s)
    assert "30/30" in table([alone, crowd])
