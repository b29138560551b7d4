"""Rooms: one speaker's captions, read live by an audience (docs/protocol.md, "Rooms").

A speaker whose `start` asks for `"room": true` gets a room id and a viewer token. Viewers open
`/ws/watch/ROOM?token=VIEWER_TOKEN` (the page `/watch/ROOM?token=...` does) and receive the same `partial`,
`commit`, `target_partial` and `target_commit` messages the speaker gets; a late joiner first gets every commit so
far (up to `RoomLimits.max_replay_messages`). When the speaker's session ends the room sends `room_end` and closes.

The speaker never waits for a viewer: `Room.publish` only appends to each viewer's bounded queue, and a viewer whose
queue overflows (it does not read) is dropped with `slow_client`. Viewer sockets are read-only: whatever a viewer
sends is answered with a `read_only` error and never reaches the session. Framework-free: the socket is an
`sockets.MessageSocket`; app.py does the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

from engine.errors import ConfigError

from . import protocol as p
from .auth import token_matches
from .sockets import MessageSocket, SocketClosed

log = logging.getLogger(__name__)

# what viewers see of the speaker's messages; errors, stats, ready and answer stay with the speaker
FORWARDED = (p.PartialMessage, p.CommitMessage, p.TargetPartialMessage, p.TargetCommitMessage)
REPLAYED = (p.CommitMessage, p.TargetCommitMessage)  # appended text: what a late joiner must see again
# the others (partials) a later one replaces: dropped first when a viewer lags (`ServerMessage.droppable`)


@dataclass(frozen=True)
class RoomLimits:
    """How big the audience may get and how much each viewer may lag. Rooms per server <= sessions per server."""

    max_viewers: int = 200  # per room; beyond: HTTP 503 at the viewer's handshake (`dragoman serve --max-viewers`)
    # per viewer: a viewer this many messages behind is dropped (`slow_client`); partials go from half full. A
    # phone on a weak network reading a talk falls this far behind only after minutes of not reading at all.
    viewer_queue_messages: int = 128
    max_replay_messages: int = 5000  # commits kept for late joiners (about 3 h of word-by-word commits)
    send_timeout_s: float = 10.0  # a viewer that accepts no message this long is cut

    def __post_init__(self) -> None:
        if self.max_viewers < 1 or self.viewer_queue_messages < 4 or self.max_replay_messages < 1:
            raise ConfigError("max_viewers >= 1, viewer_queue_messages >= 4 and max_replay_messages >= 1 are needed")


@dataclass(eq=False)
class Viewer:
    """One viewer socket and its bounded queue of messages already written (once for all viewers). Only the room
    fills it; only `serve_viewer` drains it."""

    ws: MessageSocket
    queue_size: int
    out: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False  # too slow: closed with slow_client
    finished: bool = False  # room_end queued: close after sending it

    def offer(self, message: str, superseded: bool) -> bool:
        """Queue without waiting; False if the viewer is too far behind (it is then dropped by the room)."""
        if superseded and len(self.out) >= self.queue_size // 2:
            return True  # the next partial replaces this one
        if len(self.out) >= self.queue_size:
            return False
        self.out.append(message)
        self.wake.set()
        return True


class Room:
    """A speaker's session seen by viewers: the commit log for late joiners, the current partials, the viewers."""

    def __init__(self, room_id: str, viewer_token: str, limits: RoomLimits) -> None:
        self.id = room_id
        self.viewer_token = viewer_token
        self.limits = limits
        self.viewers: set[Viewer] = set()
        self.log: deque[str] = deque(maxlen=limits.max_replay_messages)  # written commits
        self.partials: dict[str, str] = {}  # the latest partial / target_partial per (type, target)
        self.ended: str | None = None  # why the room ended, once it has
        self.n_dropped = 0  # viewers dropped for not reading

    def publish(self, message: p.Outgoing) -> None:
        """One of the speaker's messages; forwarded ones go to every viewer. Never waits, never raises."""
        if not isinstance(message, FORWARDED) or self.ended is not None:
            return
        text = message.to_json()  # once, whatever the audience
        key = "partial" if isinstance(message, (p.PartialMessage, p.CommitMessage)) else "target:" + message.target
        if isinstance(message, REPLAYED):
            self.log.append(text)
            # a commit settles the tail; the next partial follows (the speaker's page does the same)
            self.partials.pop(key, None)
        else:
            self.partials[key] = text
        for viewer in list(self.viewers):
            if not viewer.offer(text, message.droppable):
                self._drop(viewer)

    def _drop(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        viewer.dropped = True
        self.n_dropped += 1
        viewer.out.clear()
        viewer.out.append(
            p.ErrorMessage(p.ErrorCode.SLOW_CLIENT, "this viewer fell too far behind the captions; reload").to_json()
        )
        viewer.finished = True
        viewer.wake.set()
        log.info("[room %s] a viewer that does not read was dropped", self.id)

    def join(self, ws: MessageSocket) -> Viewer:
        """A viewer joins: it gets `joined`, every commit so far, the current partials, then live messages."""
        viewer = Viewer(ws, self.limits.viewer_queue_messages)
        replay = [p.JoinedMessage(self.id, self.ended is None, len(self.log)).to_json(), *self.log]
        if self.ended is None:
            replay += list(self.partials.values())
            self.viewers.add(viewer)
        else:
            replay.append(p.RoomEndMessage(self.ended).to_json())
            viewer.finished = True
        viewer.out.extend(replay)  # the replay may exceed the live queue's bound: it is already in memory
        viewer.wake.set()
        return viewer

    def end(self, reason: str) -> None:
        """The speaker's session is over: every viewer is told, then closed once it has read what was queued."""
        if self.ended is not None:
            return
        self.ended = reason
        message = p.RoomEndMessage(reason).to_json()
        for viewer in list(self.viewers):
            viewer.out.append(message)  # past the bound on purpose: the end notice is never dropped
            viewer.finished = True
            viewer.wake.set()
        self.viewers.clear()

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def check(self, token: str | None) -> bool:
        return token_matches(self.viewer_token, token)


class RoomRegistry:
    """Every open room of one server."""

    def __init__(self, limits: RoomLimits = RoomLimits()) -> None:
        self.limits = limits
        self.rooms: dict[str, Room] = {}

    def open(self) -> Room:
        room_id = secrets.token_hex(4)
        while room_id in self.rooms:
            room_id = secrets.token_hex(4)
        room = Room(room_id, secrets.token_urlsafe(12), self.limits)
        self.rooms[room_id] = room
        return room

    def close(self, room: Room, reason: str) -> None:
        room.end(reason)
        self.rooms.pop(room.id, None)

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    @property
    def n_viewers(self) -> int:
        return sum(len(r.viewers) for r in self.rooms.values())


async def serve_viewer(room: Room, ws: MessageSocket, send_timeout_s: float | None = None) -> None:
    """Run one accepted viewer socket until the room ends, the viewer leaves or falls behind."""
    viewer = room.join(ws)
    timeout_s = room.limits.send_timeout_s if send_timeout_s is None else send_timeout_s

    async def read_only() -> None:
        # anything a viewer sends is refused here; it never reaches the speaker's session
        while True:
            message = await ws.recv()
            what = "audio" if isinstance(message, bytes) else "messages"
            if len(viewer.out) < viewer.queue_size:
                viewer.out.append(
                    p.ErrorMessage(
                        p.ErrorCode.READ_ONLY,
                        f"a viewer cannot send {what}: this socket only receives the room's captions",
                    ).to_json()
                )
                viewer.wake.set()

    reader = asyncio.ensure_future(read_only())
    try:
        while True:
            while viewer.out:
                message = viewer.out.popleft()
                await asyncio.wait_for(ws.send(message), timeout_s)
            if viewer.finished:
                break
            viewer.wake.clear()
            waiter = asyncio.ensure_future(viewer.wake.wait())
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reader.done():
                break  # the viewer went away
        code, reason = (1008, "slow_client") if viewer.dropped else (1000, "room ended")
        await asyncio.wait_for(ws.close(code, reason), timeout_s)
    except TimeoutError:
        ws.abort()
    except SocketClosed:
        pass
    finally:
        room.leave(viewer)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
