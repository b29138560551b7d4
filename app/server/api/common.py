"""What the OpenAI Realtime and Deepgram sockets share: a connection whose stream is cut into turns, and G.711 audio.

Both APIs let a client flush what it said so far and keep talking on the same socket (Deepgram's `Finalize`,
OpenAI's `input_audio_buffer.commit` or server VAD). Dragoman flushes by finishing its live session (the final
commits of everything received), so a turn is one engine session: `flush()` finishes the current one; audio that
arrives meanwhile is held (bounded by `max_backlog_s`: beyond it the socket is read more slowly) and opens the next
session once the flush is over. Times stay in connection time: every turn knows the offset its session started at.

Everything else — limits, rates, backpressure, idle and session timeouts, graceful shutdown — is `Connection`'s.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import protocol as p
from ..connection import Connection

if TYPE_CHECKING:
    from app.runtime import LiveSession

log = logging.getLogger("app.server")


@dataclass(frozen=True)
class JsonEvent:
    """A compatible API's event (`protocol.Outgoing`): its JSON object, written the way that API's servers write it
    (`json.dumps`' spacing; `ascii`: non-ASCII text \\u-escaped, as Deepgram's control events are)."""

    body: dict[str, Any]
    droppable: bool = False  # a later event supersedes it (interim results, partials): dropped first under backpressure
    ascii: bool = False

    def to_json(self) -> str:
        return json.dumps(self.body, ensure_ascii=self.ascii)


class HandshakeRefused(Exception):
    """A compatible socket refuses the handshake (bad query parameters, no capacity): HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TurnConnection(Connection):
    """A Connection whose engine sessions follow one another as turns (see the module docstring)."""

    task: str = "transcribe"
    language: str | None = None
    sample_rate: int = 16000

    def _init_turns(self) -> None:
        self.turn_offset_s = 0.0  # connection time at which the current session's stream time 0 lies
        self.received_s = 0.0  # audio received on this connection so far (connection time)
        self.flushing: LiveSession | None = None  # a session being finished; new audio waits in `held`
        self.held: list[tuple[np.ndarray, int]] = []
        self.held_s = 0.0
        self.turns = 0
        self.closing_after_flush = False  # CloseStream: close once the flush is over

    # turns -------------------------------------------------------------------------------------------------------

    def start_turn(self, offset_s: float) -> None:
        """Open the next session, its stream time 0 at connection time `offset_s` (ProtocolError `busy`)."""
        bucket = self.audio
        self._start(p.Start(task=self.task, language=self.language, sample_rate=self.sample_rate))  # type: ignore
        self.turn_offset_s = offset_s
        if bucket is not None:
            self.audio = bucket  # one audio budget per connection, not per turn
        self.turns += 1
        self.on_turn_started()

    def feed_turn(self, samples: np.ndarray, sample_rate: int) -> None:
        """Audio for the current turn; held while a flush is under way; opens a turn when none is open."""
        if samples.size == 0:
            return
        duration_s = samples.size / sample_rate
        if self.flushing is not None:
            if self.audio is not None:
                self.delay_s = max(self.delay_s, self.audio.take(duration_s, time.monotonic()))
            self.held.append((samples, sample_rate))
            self.held_s += duration_s
            self.received_s += duration_s
            if self.held_s > self.limits.max_backlog_s:
                self.delay_s = max(self.delay_s, 0.2)  # read more slowly until the flush is over
            return
        if self.live is None:
            self.start_turn(self.received_s)
        self.received_s += duration_s
        self._feed(samples, sample_rate)

    def flush(self) -> bool:
        """Finish the current turn (its final commits follow); False if there is nothing to flush."""
        live = self.live
        if live is None or self.flushing is not None:
            return False
        self.flushing = live
        self._spawn(self._finish(live))
        return True

    async def _session_over(self, live: LiveSession) -> None:
        await self._close_session()
        self.flushing = None
        self.on_turn_over(live)
        if self.ending:
            return
        if self.closing_after_flush:
            self.on_close_stream()
            return
        if self.held:
            held, offset = self.held, self.received_s - self.held_s
            self.held, self.held_s = [], 0.0
            try:
                self.start_turn(offset)
            except p.ProtocolError as e:
                self.error(e.code, e.message)
                return
            for samples, rate in held:
                self._feed(samples, rate, counted=True)

    def _server_stop(self) -> bool:
        if self.flushing is not None:
            return False
        if self.live is None:
            return False
        self.flushing = self.live
        return True

    async def _stats(self, live: LiveSession) -> None:
        return  # these protocols have no stats message; /metrics has the numbers

    def _announce(self, live: LiveSession) -> None:
        pass

    # hooks for the protocols -------------------------------------------------------------------------------------

    def on_turn_started(self) -> None:
        pass

    def on_turn_over(self, live: LiveSession) -> None:
        pass

    def on_close_stream(self) -> None:
        self._spawn(self._close_socket(1000, ""))


def downmix(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved multichannel float32 -> mono (the mean of the channels)."""
    if channels == 1:
        return samples
    n = samples.size // channels * channels
    return samples[:n].reshape(-1, channels).mean(axis=1).astype(np.float32)


# G.711 (Deepgram's mulaw/alaw encodings, OpenAI's audio/pcmu and audio/pcma): byte -> float32 sample
def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.uint8)
    exponent = ((u >> 4) & 7).astype(np.int32)
    magnitude = ((((u & 0x0F).astype(np.int32)) << 3) + 0x84) << exponent
    sample = magnitude - 0x84
    return (np.where(u & 0x80, -sample, sample) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


TABLES = {"mulaw": _ulaw_table(), "alaw": _alaw_table()}
