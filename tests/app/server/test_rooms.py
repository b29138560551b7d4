"""Rooms: viewers read a speaker's captions live, late joiners get the commits so far, viewer sockets are read-only,
a viewer that does not read is dropped without slowing the speaker, and viewers are told when the room ends.

The server is the real one (uvicorn, app/server/connection.py, app/server/rooms.py); the engine is a scripted stand-in that turns
every 0.1 s of audio into one committed word, so the tests run in seconds. tests/e2e/test_watch.py covers the page.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.server import DragomanServer, ServerConfig
from app.server import protocol as p
from app.server.auth import AccessConfig
from app.server.rooms import Room, RoomLimits
from engine.events import Commit, Partial
from tests.server_clients import pcm16

WORD_S = 0.1  # the fake engine commits one word per 0.1 s of audio


class FakeLive:
    """A LiveSession stand-in: a partial and then a commit `w<i>` for every WORD_S of audio fed."""

    _ids = 0
    words: tuple[str, ...] = ()  # the words to commit, cycling; () = w0, w1, ...

    def __init__(self, config: Any) -> None:
        FakeLive._ids += 1
        self.id = f"fake{FakeLive._ids}"
        self.config = config
        self.closed = False
        self.audio_s = 0.0
        self.lag_s = 0.0
        self.rtf = 0.1
        self.n_words = 0
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def feed_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        self.audio_s += samples.size / sample_rate
        while (self.n_words + 1) * WORD_S <= self.audio_s + 1e-9:
            t = self.n_words * WORD_S
            word = self.words[self.n_words % len(self.words)] if self.words else f"w{self.n_words}"
            self.queue.put_nowait(Partial(f" {word}", t, t + WORD_S))
            self.queue.put_nowait(Commit(f" {word}", t, t + WORD_S))
            self.n_words += 1

    async def events(self):
        while (event := await self.queue.get()) is not None:
            yield event

    async def finish(self) -> None:
        self.queue.put_nowait(None)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeEngine:
    backend: Any = None
    words: tuple[str, ...] = ()  # FakeLive.words for its sessions
    sessions: list[FakeLive] = field(default_factory=list)

    max_sessions: int = 4

    @property
    def config(self) -> Any:  # EngineConfig's shape
        return SimpleNamespace(max_sessions=self.max_sessions)

    @property
    def n_sessions(self) -> int:
        return sum(not s.closed for s in self.sessions)

    def open_session(self, config: Any) -> FakeLive:
        if self.n_sessions >= self.config.max_sessions:
            from app.runtime import EngineBusy

            raise EngineBusy(f"{self.n_sessions} sessions are open")
        live = FakeLive(config)
        live.words = self.words
        self.sessions.append(live)
        return live


@pytest.fixture
async def server():
    engine = FakeEngine()
    config = ServerConfig(port=0, rooms=RoomLimits(max_viewers=3, viewer_queue_messages=16))
    async with DragomanServer(engine, config) as srv:  # type: ignore[arg-type]
        srv.fake = engine
        yield srv


def watch_url(server: DragomanServer, room: dict[str, Any], token: str | None = None) -> str:
    return f"{server.ws_url}/watch/{room['room']}?token={token or room['viewer_token']}"


async def open_room(ws, **start: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "start", "room": True, "language": "de", **start}))
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready"
    room = json.loads(await ws.recv())
    assert room["type"] == "room" and room["watch_path"].startswith(f"/watch/{room['room']}?token=")
    return room


async def speak(ws, seconds: float, frame_s: float = 0.02, realtime: float = 0.0) -> None:
    """`seconds` of audio in `frame_s` frames; `realtime` > 0 paces them at that multiple of real time."""
    frame = pcm16(np.zeros(int(16000 * frame_s), np.float32))
    t0 = time.monotonic()
    for i in range(round(seconds / frame_s)):
        await ws.send(frame)
        if realtime:
            await asyncio.sleep(max(0.0, t0 + (i + 1) * frame_s / realtime - time.monotonic()))


async def read_until(ws, kind: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while not out or out[-1]["type"] != kind:
            out.append(json.loads(await ws.recv()))
    return out


def commits(messages: list[dict[str, Any]]) -> str:
    return "".join(m["text"] for m in messages if m["type"] == "commit")


async def test_two_viewers_get_the_speakers_commits_and_the_room_end(server):
    """Both viewers receive exactly the speaker's commits, then `room_end`, then a normal close."""
    async with connect(server.ws_url) as speaker:
        room = await open_room(speaker)
        async with connect(watch_url(server, room)) as v1, connect(watch_url(server, room)) as v2:
            for v in (v1, v2):
                joined = json.loads(await v.recv())
                assert joined == {"type": "joined", "room": room["room"], "live": True, "replayed": 0}
            await speak(speaker, 1.0)
            await speaker.send(json.dumps({"type": "stop"}))
            mine = await read_until(speaker, "end")
            seen = [await read_until(v, "room_end") for v in (v1, v2)]
            for v in (v1, v2):
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(v.recv(), 5)
                assert v.close_code == 1000
    expected = "".join(f" w{i}" for i in range(10))
    assert commits(mine) == expected
    for got in seen:
        assert commits(got) == expected
        assert got[-1]["type"] == "room_end" and "ended" in got[-1]["reason"]
        assert not {m["type"] for m in got} & {"stats", "ready", "error", "end"}  # the speaker's own business


@pytest.mark.slow
async def test_a_late_joiner_gets_the_commits_so_far(server):
    """A viewer that joins mid-talk first gets every earlier commit, then the live ones."""
    async with connect(server.ws_url) as speaker:
        room = await open_room(speaker)
        await speak(speaker, 0.5)
        live_room = server.hub.rooms.get(room["room"])
        async with asyncio.timeout(10):
            while len(live_room.log) < 5:
                await asyncio.sleep(0.01)
        async with connect(watch_url(server, room)) as late:
            first = json.loads(await late.recv())
            assert first["type"] == "joined" and first["replayed"] == 5
            await speak(speaker, 0.5)
            await speaker.send(json.dumps({"type": "stop"}))
            got = await read_until(late, "room_end")
    assert commits(got) == "".join(f" w{i}" for i in range(10))


async def test_after_the_room_ended_its_link_no_longer_opens(server):
    """A room exists only while its speaker's session runs."""
    async with connect(server.ws_url) as speaker:
        room = await open_room(speaker)
        await speaker.send(json.dumps({"type": "stop"}))
        await read_until(speaker, "end")
        with pytest.raises(InvalidStatus) as e:
            async with connect(watch_url(server, room)):
                pass
        assert e.value.response.status_code == 401


async def test_a_viewer_cannot_send_audio_or_control(server):
    """start, stop and audio from a viewer are refused with `read_only`; the speaker's session is untouched."""
    async with connect(server.ws_url) as speaker:
        room = await open_room(speaker)
        async with connect(watch_url(server, room)) as viewer:
            await read_until(viewer, "joined")
            await viewer.send(json.dumps({"type": "start", "language": "de"}))
            await viewer.send(pcm16(np.zeros(320, np.float32)))
            await viewer.send(json.dumps({"type": "stop"}))
            got = [json.loads(await viewer.recv()) for _ in range(3)]
            assert [m.get("code") for m in got] == ["read_only"] * 3
            assert len(server.fake.sessions) == 1 and server.fake.sessions[0].audio_s == 0.0
            await speak(speaker, 0.2)
            await speaker.send(json.dumps({"type": "stop"}))
            assert commits(await read_until(speaker, "end")) == " w0 w1"


async def test_viewer_tokens_are_checked(backend_free_token_server):
    """A wrong viewer token gets 401; the viewer token does not open the speaker's /ws; the server token is not a
    viewer token."""
    server = backend_free_token_server
    async with connect(server.ws_url + "?token=SPEAKER") as speaker:
        room = await open_room(speaker)
        for token in ("wrong", "SPEAKER"):
            with pytest.raises(InvalidStatus) as e:
                async with connect(watch_url(server, room, token)):
                    pass
            assert e.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as e:
            async with connect(server.ws_url + "?token=" + room["viewer_token"]):
                pass
        assert e.value.response.status_code == 401
        async with connect(watch_url(server, room)) as viewer:
            assert json.loads(await viewer.recv())["type"] == "joined"


@pytest.fixture
async def backend_free_token_server():
    config = ServerConfig(port=0, access=AccessConfig(token="SPEAKER"))
    async with DragomanServer(FakeEngine(), config) as srv:  # type: ignore[arg-type]
        yield srv


async def test_the_viewer_limit_is_enforced(server):
    """Beyond RoomLimits.max_viewers a viewer's handshake gets 503."""
    async with connect(server.ws_url) as speaker:
        room = await open_room(speaker)
        viewers = [await connect(watch_url(server, room)) for _ in range(3)]
        try:
            for v in viewers:
                await read_until(v, "joined")
            with pytest.raises(InvalidStatus) as e:
                async with connect(watch_url(server, room)):
                    pass
            assert e.value.response.status_code == 503
        finally:
            for v in viewers:
                await v.close()


@pytest.mark.slow
async def test_a_viewer_that_does_not_read_does_not_slow_the_speaker():
    """With a viewer that never reads, the speaker and a reading viewer get every commit, as fast as with no stuck
    viewer at all (the stuck one's queue is bounded; test_room_publish_drops_a_full_viewer_... shows the drop)."""
    async with DragomanServer(FakeEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]
        await _no_slowdown(server)


async def _no_slowdown(server: DragomanServer) -> None:

    async def talk(n_viewers_stuck: int) -> tuple[float, str, list[dict[str, Any]]]:
        async with connect(server.ws_url) as speaker:
            room = await open_room(speaker)
            reader = await connect(watch_url(server, room))
            stuck = []
            for _ in range(n_viewers_stuck):
                # a tiny receive buffer and no reading: its TCP window fills, the server's sends stall
                stuck.append(await connect(watch_url(server, room), max_queue=1))
            t0 = time.monotonic()
            await speak(speaker, 30.0, realtime=20.0)
            await speaker.send(json.dumps({"type": "stop"}))
            mine = await read_until(speaker, "end", timeout_s=60)
            elapsed = time.monotonic() - t0
            got = await read_until(reader, "room_end", timeout_s=30)
            r = server.hub.rooms
            for s in stuck:
                s.transport.abort()
            await reader.close()
            assert not r.rooms  # closed with the session
            return elapsed, commits(mine), got

    base_s, base_text, _ = await talk(0)
    slow_s, text, got = await talk(1)
    expected = "".join(f" w{i}" for i in range(300))
    assert base_text == text == expected
    assert commits(got) == expected  # the reading viewer missed nothing
    assert slow_s < base_s * 3 + 1.0, (base_s, slow_s)  # not waiting for the stuck viewer (its send would take 10 s)


def test_room_publish_drops_a_full_viewer_and_keeps_partials_superseded():
    """Unit: partials stop being queued at half the bound, commits fill it, one more drops the viewer."""

    class Sock:
        peer = "t"

    room = Room("r1", "tok", RoomLimits(viewer_queue_messages=8))
    viewer = room.join(Sock())  # type: ignore[arg-type]
    viewer.out.clear()
    for i in range(10):
        room.publish(p.PartialMessage(f"p{i}"))
    assert len(viewer.out) == 4  # partials only up to half the queue
    for i in range(4):
        room.publish(p.CommitMessage(f" c{i}", 0, 1))
    assert len(viewer.out) == 8 and viewer in room.viewers
    room.publish(p.CommitMessage(" c4", 0, 1))
    assert viewer.dropped and viewer not in room.viewers and room.n_dropped == 1
    assert json.loads(viewer.out[-1])["code"] == "slow_client"
    late = room.join(Sock())  # type: ignore[arg-type]
    assert [json.loads(m)["text"] for m in list(late.out)[1:]] == [" c0", " c1", " c2", " c3", " c4"]


def test_serve_max_viewers_flag_sets_the_room_limit():
    """`dragoman serve --max-viewers N` is the per-room viewer limit."""
    from app.cli import build_parser
    from app.commands.serve import server_config

    args = build_parser().parse_args(["serve", "--port", "0", "--max-viewers", "7"])
    assert server_config(args).rooms.max_viewers == 7
    assert server_config(build_parser().parse_args(["serve"])).rooms == RoomLimits()


async def test_two_hundred_viewers_each_get_every_commit():
    """200 viewers (the default limit) on one room: every one receives every commit, and the speaker's own
    commits arrive about as fast as with no viewers."""
    async with DragomanServer(FakeEngine(), ServerConfig(port=0)) as server:  # type: ignore[arg-type]

        async def talk(n_viewers: int) -> tuple[float, list[str]]:
            async with connect(server.ws_url) as speaker:
                room = await open_room(speaker)
                viewers = await asyncio.gather(*(connect(watch_url(server, room)) for _ in range(n_viewers)))
                for v in viewers:
                    await read_until(v, "joined")
                readers = [asyncio.ensure_future(read_until(v, "room_end", timeout_s=60)) for v in viewers]
                t0 = time.monotonic()
                await speak(speaker, 3.0, realtime=10.0)
                await speaker.send(json.dumps({"type": "stop"}))
                mine = await read_until(speaker, "end", timeout_s=30)
                elapsed = time.monotonic() - t0
                got = await asyncio.gather(*readers)
                await asyncio.gather(*(v.close() for v in viewers))
                assert commits(mine) == "".join(f" w{i}" for i in range(30))
                return elapsed, [commits(g) for g in got]

        alone_s, _ = await talk(0)
        crowd_s, seen = await talk(200)
        assert len(seen) == 200 and set(seen) == {"".join(f" w{i}" for i in range(30))}
        assert crowd_s < alone_s + 1.5, (alone_s, crowd_s)  # paced at 10x: 0.3 s of sending either way
