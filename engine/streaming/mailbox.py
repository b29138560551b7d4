"""Where a stream meets the I/O thread: audio in (Inbox: validated, resampled to 16 kHz, queued; no model work,
feed() costs microseconds) and events out (Outbox: filled by the model side, drained by the I/O side)."""

from __future__ import annotations

import threading

import numpy as np

from ..audio import SAMPLE_RATE, StreamResampler, check_sample_rate, to_mono_float32
from ..errors import StreamStateError
from ..events import Event, TimedEvent


class Inbox:
    """Thread-safe between one feeding thread and the worker that takes the audio."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._resampler: StreamResampler | None = None
        self.finishing = False  # finish() was called: no more audio
        self.n_received = 0  # samples at 16 kHz accepted so far

    def feed(self, samples: np.ndarray, sample_rate: int) -> None:
        """Accept a chunk of PCM (any rate, mono or (n, channels)); raises AudioError on unusable input."""
        sr = check_sample_rate(sample_rate)
        x = to_mono_float32(samples)
        with self._lock:
            if self.finishing:
                raise StreamStateError("feed_audio() after finish(): open a new session for more audio")
            if self._resampler is None or self._resampler.from_rate != sr:
                if self._resampler is not None and self._resampler.from_rate != SAMPLE_RATE:
                    self._push(self._resampler.process(np.zeros(0, np.float32), last=True))
                self._resampler = StreamResampler(sr, SAMPLE_RATE)
            self._push(self._resampler.process(x))

    def _push(self, x: np.ndarray) -> None:
        if x.size:
            self._chunks.append(np.ascontiguousarray(x, dtype=np.float32))
            self.n_received += len(x)

    def finish(self) -> bool:
        """No more audio (the resampler's tail goes in); False: it was already finishing."""
        with self._lock:
            if self.finishing:
                return False
            if self._resampler is not None:
                self._push(self._resampler.process(np.zeros(0, np.float32), last=True))
            self.finishing = True
            return True

    def take(self) -> tuple[list[np.ndarray], bool]:
        """The audio queued so far, and whether the stream is finishing (read together)."""
        with self._lock:
            out, self._chunks = self._chunks, []
            return out, self.finishing

    def has_audio(self) -> bool:
        with self._lock:
            return bool(self._chunks)


class Outbox:
    """Events with the stream time (seconds of audio processed) at which each was decided; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[TimedEvent] = []

    def put(self, t_audio: float, event: Event) -> None:
        with self._lock:
            self._events.append(TimedEvent(t_audio, event))

    def drain(self) -> list[TimedEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out
