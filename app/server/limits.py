"""Per-connection and per-server limits, and the token bucket that enforces rates. Sans-I/O: time is passed in.

Every resource a client can make the server spend is bounded here or in `ProtocolLimits` (protocol.py):
bytes per message, messages and audio seconds per wall second, audio waiting for the model, connections, idle and
total session time. The defaults suit a venue captioning box on 2-4 cores; `dragoman serve` exposes each as a flag
and docs/protocol.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import ConfigError


@dataclass(frozen=True)
class ServerLimits:
    """What one client may use, and how many clients there may be. Sessions per engine: EngineConfig.max_sessions."""

    # Sustained audio seconds accepted per wall second, per session. A microphone sends 1.0; 4x leaves room for a
    # reconnect catch-up or a file streamed a little fast, while a client pushing an hour in a minute is slowed
    # (its socket is read more slowly: nothing is dropped) and told once with `rate_limited`.
    max_realtime: float = 4.0
    burst_audio_s: float = 10.0  # audio a session may send at once before the rate applies (bucket size)
    # WebSocket messages per second per connection, whatever their size: a flood of 1-byte frames costs per-message
    # work (parse, error reply) that the audio rate does not see. The page sends 50/s (20 ms frames).
    max_messages_per_s: float = 200.0
    burst_messages: float = 400.0
    # Audio received but not yet committed (LiveSession.lag_s). Above it the socket is not read until the model
    # catches up, so an overloaded server holds at most this much audio per session instead of growing without end.
    # Normal lag is under max_segment_s (24 s) plus a chunk.
    max_backlog_s: float = 60.0
    idle_timeout_s: float = 60.0  # a connection that sends nothing (no message, no WebRTC audio) this long is ended
    max_session_s: float = 4 * 3600.0  # one session's wall time; then it is flushed and ended (the page reconnects)
    # open WebSockets, sessions or not; beyond: HTTP 503 at the handshake. (The receive buffer needs no limit of its
    # own: uvicorn stops reading a socket after each message until the app has taken it, so a connection holds at
    # most one message of ProtocolLimits.max_audio_frame_bytes before TCP backpressure reaches the client.)
    max_connections: int = 64
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long open sessions get to flush before they are cut

    def __post_init__(self) -> None:
        for name in (
            "max_realtime",
            "burst_audio_s",
            "max_messages_per_s",
            "burst_messages",
            "max_backlog_s",
            "idle_timeout_s",
            "max_session_s",
            "shutdown_timeout_s",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.max_realtime < 1.0:
            raise ConfigError(f"max_realtime must be at least 1 (real time), got {self.max_realtime}")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")


@dataclass
class TokenBucket:
    """Admits `rate` units per second with bursts up to `burst`; reports how long to wait instead of refusing.

    `take` always admits (the unit already arrived) and may drive the level negative; the caller then waits the
    returned seconds before reading more. So by time t at most burst + rate * t units plus one item are admitted.
    """

    rate: float  # units per second
    burst: float  # bucket size
    level: float = field(init=False)  # units available now (negative: in debt); starts full
    t: float | None = field(default=None, init=False)  # time of the last update

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 0):
            raise ConfigError(f"a token bucket needs rate > 0 and burst >= 0, got {self.rate}, {self.burst}")
        self.level = self.burst

    def _refill(self, now: float) -> None:
        if self.t is not None and now > self.t:
            self.level = min(self.burst, self.level + (now - self.t) * self.rate)
        self.t = now if self.t is None else max(self.t, now)

    def take(self, amount: float, now: float) -> float:
        """Spend `amount` at time `now` (seconds, monotonic); returns the seconds to wait before the next take."""
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def try_take(self, amount: float, now: float) -> bool:
        """Spend `amount` only if it is available now (for input that cannot be slowed down, only dropped)."""
        self._refill(now)
        if self.level < amount:
            return False
        self.level -= amount
        return True


@dataclass(frozen=True)
class FileLimits:
    """Uploads to the OpenAI-compatible file endpoints (api/openai.py)."""

    max_upload_bytes: int = 100 * 2**20  # the request body; beyond: 413 before the rest is read
    max_audio_s: float = 3 * 3600.0  # decoded audio; beyond: 413 (memory: 16 kHz float32 is 230 MB per hour)
    # file jobs decoding or waiting (one decodes at a time, beside the live engine); beyond: 429, try later
    max_jobs: int = 4

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or not self.max_audio_s > 0 or self.max_jobs < 1:
            raise ConfigError("file limits must be positive (max_upload_bytes, max_audio_s, max_jobs)")
