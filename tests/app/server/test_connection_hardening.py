"""Hostile and broken clients next to a real one: each bad input gets its stable error code (or a clean close), the
server keeps serving, and a well-behaved client streaming German speech meanwhile gets its complete translation.
A failure inside one session's model work ends only that session, logged once with its id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.runtime import Engine, EngineConfig
from app.server import DragomanServer, ServerConfig
from tests.server_clients import pcm16, stream_pcm, words
from tests.speech import speech

pytestmark = pytest.mark.slow

KEY_WORDS = {"sister", "works", "hospital", "doctor", "helps", "people"}  # sentence de/3's English reference


async def replies_to(url: str, sends: list, *, start: dict | None = None, wait_s: float = 5.0) -> tuple[list, int]:
    """Open a connection, optionally start, send each item; return what came back (until quiet) and the close code."""
    out: list[dict] = []
    code = None
    try:
        async with connect(url, max_size=2**20, close_timeout=2) as ws:
            if start is not None:
                await ws.send(json.dumps({"type": "start", **start}))
            for item in sends:
                await ws.send(item)
            quiet_until = asyncio.get_running_loop().time() + wait_s  # stats alone do not count as activity
            while True:
                try:
                    out.append(
                        json.loads(
                            await asyncio.wait_for(ws.recv(), max(0.0, quiet_until - asyncio.get_running_loop().time()))
                        )
                    )
                except TimeoutError:
                    break
                if out[-1]["type"] == "end":
                    break
                if out[-1]["type"] != "stats":
                    quiet_until = asyncio.get_running_loop().time() + wait_s
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 1006
    return out, code


def codes(out: list[dict]) -> list[str]:
    return [m["code"] for m in out if m["type"] == "error"]


async def test_bad_input_gets_codes_while_a_good_client_is_unaffected(server, audio_dir):
    """Every class of bad input from the issue, sent in parallel with a real stream, fails alone and cleanly."""
    audio, _ = speech("de", 3, audio_dir)
    url = server.ws_url
    nan = np.array([0.1, math.nan, math.inf, -math.inf], "<f4").tobytes()
    cases = {
        "malformed json": ([b"", "{nope"], None, {"not_started", "bad_json"}, None),
        "unknown type": (['{"type":"launch"}'], None, {"unknown_type"}, None),
        "missing type": (['{"task":"translate"}', '{"type":"offer"}'], None, {"bad_message"}, None),
        "wrong fields": (
            ['{"type":"start","sample_rate":"fast"}', '{"type":"start","task":7}', '{"type":"start","protocol":99}'],
            None,
            {"bad_message", "unsupported_version"},
            None,
        ),
        "audio before start": ([b"\x00\x00" * 160, '{"type":"stop"}'], None, {"not_started"}, None),
        "start twice": (['{"type":"start"}'], {}, {"already_started"}, None),
        "odd length pcm": ([b"\x00\x00\x00"], {}, {"bad_audio"}, None),
        "misaligned f32": ([b"\x00" * 6], {"encoding": "pcm_f32le"}, {"bad_audio"}, None),
        "nan and inf": ([nan], {"encoding": "pcm_f32le"}, {"bad_audio"}, None),
        "absurd rates": (
            ['{"type":"start","sample_rate":1}', '{"type":"start","sample_rate":1e12}'],
            None,
            {"bad_message"},
            None,
        ),
        "empty frame": ([b""], {}, {"bad_audio"}, None),
        "tiny frame flood": ([b"\x00\x00"] * 1500 + ['{"type":"stop"}'], {}, {"rate_limited"}, None),
        "multi-MB frame": ([b"\x00" * (4 * 2**20)], {}, set(), 1009),
    }

    async def disconnect_mid_stream() -> None:
        ws = await connect(url)
        await ws.send('{"type":"start"}')
        for i in range(0, len(audio) // 2, 320):
            await ws.send(pcm16(audio[i : i + 320]))
        ws.transport.abort()  # gone without stop or close

    good = asyncio.ensure_future(stream_pcm(url, audio, realtime=2.0))
    results = await asyncio.gather(
        *(replies_to(url, sends, start=start) for sends, start, _, _ in cases.values()), disconnect_mid_stream()
    )
    out = await good
    for (name, (_, _, expected, close)), (replies, code) in zip(cases.items(), results):
        got = set(codes(replies))
        assert got <= expected | {"rate_limited"} and (got or not expected), (name, got, replies[:3])
        assert expected <= got, (name, got)
        assert code == close, (name, code)
        assert all(m["type"] in ("ready", "error", "stats", "partial", "commit", "end") for m in replies)
    assert not out.errors() and out.types()[-1] == "end"
    assert len(words(out.text) & KEY_WORDS) >= 3, out.text
    # the server keeps serving: every slot is free again and a new session translates
    async with asyncio.timeout(20):
        while server.engine.n_sessions:
            await asyncio.sleep(0.05)
    again = await stream_pcm(url, audio)
    assert len(words(again.text) & KEY_WORDS) >= 3, again.text


async def test_a_model_failure_ends_only_its_session(backend, audio_dir, caplog):
    """An exception in one session's model work gives that client `internal` and `end`; the other completes."""
    caplog.set_level(logging.INFO)
    audio, _ = speech("de", 3, audio_dir)
    async with (
        Engine(backend, EngineConfig(max_sessions=3)) as engine,
        DragomanServer(engine, ServerConfig(port=0)) as srv,
    ):
        opened = []
        real_open = engine.open_session

        def open_session(config, session_id=None):
            live = real_open(config, session_id)
            opened.append(live)
            if len(opened) == 1:  # the first session's decoder blows up at its first update

                def boom(*args, **kwargs):
                    raise RuntimeError("simulated model failure")

                live.session.begin_decode = boom  # the engine's first step of model work per update
            return live

        engine.open_session = open_session
        doomed = asyncio.ensure_future(stream_pcm(srv.ws_url, audio, realtime=2.0))
        while not opened:
            await asyncio.sleep(0.01)
        healthy = await stream_pcm(srv.ws_url, audio, realtime=2.0)
        failed = await doomed
    assert [e["code"] for e in failed.errors()] == ["internal"] and failed.types()[-1] == "end"
    assert not healthy.errors() and len(words(healthy.text) & KEY_WORDS) >= 3, healthy.text
    failed_id = opened[0].id
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failed_id in failures[0].getMessage(), [r.getMessage() for r in failures]
    assert "simulated model failure" in (failures[0].exc_text or "") or failures[0].exc_info
