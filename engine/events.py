"""Events a streaming session emits. Frozen: once emitted, an event never changes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Partial:
    """The current uncertain tail; replaces the previous Partial entirely ("" clears it)."""

    text: str
    start_s: float | None = None  # stream time where the tail's audio starts, when known
    end_s: float | None = None


@dataclass(frozen=True)
class Commit:
    """Append-only final text: never retracted. All commits concatenated form the stream's output."""

    text: str
    start_s: float  # stream time (seconds since the first sample) the text covers
    end_s: float


@dataclass(frozen=True)
class Error:
    """Something went wrong in this stream; `code` is stable and machine readable."""

    code: str
    message: str


Event = Partial | Commit | Error


@dataclass(frozen=True)
class TimedEvent:
    """An event with the stream time at which it was decided."""

    at_s: float  # seconds of audio processed when the event was decided (not the time its text covers)
    event: Event
