"""Auto-detection is visible: a session that detects its language announces it (`language`, with `decided`) before
the text decoded in it, again only when it changes; a session given its language, and room viewers, get none.

The server is the real one; the engine is test_rooms.py's scripted stand-in with a detector attached (the real
model's German is checked in tests/e2e/test_browser.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from websockets.asyncio.client import connect

from app.server import DragomanServer, ServerConfig
from tests.app.server.test_rooms import FakeEngine, FakeLive, commits, open_room, read_until, speak, watch_url


class DetectingEngine(FakeEngine):
    """Sessions started with language null carry what StreamingSession exposes: `language` and `language_id`."""

    def open_session(self, config: Any) -> FakeLive:
        live = super().open_session(config)
        if config.language is None:
            live.session = SimpleNamespace(language="la", language_id=SimpleNamespace(decided=False))
        return live


async def test_detected_language_is_announced_before_its_text_and_on_change():
    engine = DetectingEngine()
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "language": None}))
            await read_until(ws, "ready")
            await speak(ws, 0.3)
            first = [m for _ in range(3) for m in await read_until(ws, "commit")]  # w0, w1, w2
            assert first[0] == {"type": "language", "language": "la", "decided": False}
            detector = engine.sessions[-1].session
            detector.language, detector.language_id.decided = "de", True
            await speak(ws, 0.3)
            await ws.send(json.dumps({"type": "stop"}))
            rest = await read_until(ws, "end")
            announced = [m for m in first + rest if m["type"] == "language"]
            assert announced == [
                {"type": "language", "language": "la", "decided": False},
                {"type": "language", "language": "de", "decided": True},
            ]
            # before the text decoded in it (w0-w2 were read before the change)
            switch = rest.index(announced[1])
            assert [m["text"] for m in rest[switch:] if m["type"] == "commit"] == [" w3", " w4", " w5"]


async def test_no_announcement_when_the_language_is_given_nor_for_viewers():
    async with DragomanServer(DetectingEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "language": "de"}))
            await read_until(ws, "ready")
            await speak(ws, 0.3)
            await ws.send(json.dumps({"type": "stop"}))
            assert "language" not in [m["type"] for m in await read_until(ws, "end")]
        async with connect(server.ws_url) as speaker:
            room = await open_room(speaker, language=None)
            async with connect(watch_url(server, room)) as viewer:
                await read_until(viewer, "joined")
                await speak(speaker, 0.3)
                await speaker.send(json.dumps({"type": "stop"}))
                assert "language" in [m["type"] for m in await read_until(speaker, "end")]
                assert "language" not in [m["type"] for m in await read_until(viewer, "room_end")]


async def test_a_language_correction_restarts_the_session_and_keeps_the_room():
    """`language` from the speaker: the session restarts in it on the same socket (`restarted`), the commits so far
    stay with every reader, and viewers keep reading the same room (no room_end)."""
    engine = DetectingEngine()
    async with DragomanServer(engine, ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with connect(server.ws_url) as speaker:
            room = await open_room(speaker, language=None)
            async with connect(watch_url(server, room)) as viewer:
                await read_until(viewer, "joined")
                await speak(speaker, 0.3)
                before = [m for _ in range(3) for m in await read_until(speaker, "commit")]
                await speaker.send(json.dumps({"type": "language", "language": "de"}))
                restarted = (await read_until(speaker, "restarted"))[-1]
                first, second = engine.sessions
                assert first.closed and not second.closed and second.config.language == "de"
                assert restarted == {"type": "restarted", "session": second.id, "language": "de"}
                await speak(speaker, 0.2)
                await speaker.send(json.dumps({"type": "stop"}))
                after = await read_until(speaker, "end")
                assert "language" not in [m["type"] for m in after]  # given now: nothing to detect
                spoken = commits(before) + commits(after)
                assert spoken == " w0 w1 w2 w0 w1"  # the new session counts its own audio from 0
                seen = await read_until(viewer, "room_end")
                assert commits(seen) == spoken and [m["type"] for m in seen].count("room_end") == 1


async def test_a_language_correction_needs_a_session_and_a_code():
    async with DragomanServer(DetectingEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        async with connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "language", "language": "de"}))
            assert json.loads(await ws.recv())["code"] == "not_started"
            await ws.send(json.dumps({"type": "start", "language": None}))
            await read_until(ws, "ready")
            await ws.send(json.dumps({"type": "language", "language": "German"}))
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["code"] == "bad_message"
