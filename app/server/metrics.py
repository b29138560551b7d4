"""Prometheus metrics for one server (GET /metrics), through the standard `prometheus_client` library.

Each server has its own registry (not the process-global one), so several servers in one process — tests, or an
app mounted twice — never mix their numbers. Counters are bumped from the event loop only; gauges that describe
state (sessions, queue depths) are read at scrape time from the objects that own that state.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """What an operator watches: load (sessions, queues), throughput (audio seconds, RTF), latency, errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_total = Counter(
            "dragoman_sessions", "Live caption sessions opened (all WebSocket APIs)", registry=r
        )
        self.audio_seconds = Counter("dragoman_audio_seconds", "Seconds of audio received (live and files)", registry=r)
        self.errors = Counter("dragoman_errors", "Errors sent to clients, by stable error code", ["code"], registry=r)
        self.requests = Counter(
            "dragoman_http_requests", "HTTP API requests, by endpoint and status", ["endpoint", "status"], registry=r
        )
        # how far a commit trails the audio received when it is made: the latency a viewer sees
        self.commit_lag = Histogram(
            "dragoman_commit_lag_seconds",
            "Audio received but not yet committed, at commit",
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 20, 30, 60),
            registry=r,
        )
        self.rtf = Histogram(
            "dragoman_session_rtf",
            "Real-time factor (compute s per audio s) of ended sessions",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4),
            registry=r,
        )
        self.file_rtf = Histogram(
            "dragoman_file_rtf",
            "Real-time factor of file transcriptions",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4),
            registry=r,
        )
        self._open = 0
        Gauge("dragoman_sessions_open", "Live sessions open now", registry=r).set_function(lambda: self._open)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read at scrape time (queue depths, capacity)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    # events ------------------------------------------------------------------------------------------------------

    def session_opened(self) -> None:
        self.sessions_total.inc()
        self._open += 1

    def session_closed(self) -> None:
        self._open = max(0, self._open - 1)

    def session_rtf(self, rtf: float) -> None:
        if rtf > 0:
            self.rtf.observe(rtf)

    def audio_in(self, seconds: float) -> None:
        self.audio_seconds.inc(seconds)

    def commit(self, lag_s: float) -> None:
        self.commit_lag.observe(lag_s)

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
