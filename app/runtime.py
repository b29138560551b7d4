"""The asyncio side: many live sessions share one model; all model work runs in one worker thread.

The event loop only moves audio in (LiveSession.feed_audio: validate, resample, append — microseconds) and
events out (an asyncio.Queue per session, filled from the worker with call_soon_threadsafe). The worker
loops over sessions that have work, round-robin, one decoder update per session per round (fair: a busy
stream cannot starve a quiet one). Each session is driven through its protocol (engine/streaming/session.py:
next_update, encode, begin_decode, decode, end_decode); for up to `max_batch` sessions at a time the encoder runs
in one batched forward pass, then their decoder steps in one batched pass per generated token
(engine.streaming.batch.decode_batch: left-padded self caches, masked encoder frames), so N streams cost far less
than N times one stream. A session that falls behind is not queued more work: its next update simply covers all
the audio that arrived meanwhile (StreamingSession decodes whatever is buffered).

The engine package stays sans-I/O; this module is the app's asyncio runtime around it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import torch

from engine.backend import Backend
from engine.errors import ConfigError, EngineError, StreamStateError
from engine.events import Error, Event
from engine.streaming.batch import decode_batch
from engine.streaming.config import SessionConfig
from engine.streaming.decoder import DecodeResult
from engine.streaming.segment import PendingDecode, Update
from engine.streaming.session import StreamingSession

log = logging.getLogger(__name__)


class EngineBusy(EngineError):
    """Every session slot is taken: try again later or raise EngineConfig.max_sessions."""


@dataclass(frozen=True)
class EngineConfig:
    max_sessions: int = 8  # concurrent streams; beyond this open_session raises EngineBusy
    batch: bool = True  # run the encoder, and the decoder steps, of concurrent sessions in shared forward passes
    max_batch: int = 4  # sessions per batched encoder pass (bounds padding waste and latency of one round)
    threads: int | None = None  # torch intra-op threads for the worker; None leaves torch's setting
    idle_wait_s: float = 0.05  # the worker re-checks sessions at least this often when nothing woke it

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_batch < 1:
            raise ConfigError("max_sessions and max_batch must be at least 1")


class LiveSession:
    """One stream inside a running Engine (create with Engine.open_session)."""

    def __init__(self, engine: Engine, session: StreamingSession, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self.session = session
        self.id = session.id
        self._loop = loop
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the end
        self._finished: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.failed = False

    def feed_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Queue a chunk of audio (any rate); never blocks the loop. Raises AudioError on bad input."""
        if self.closed:
            raise StreamStateError(f"session {self.id} is closed")
        self.session.feed_audio(samples, sample_rate)
        self._engine._wake.set()

    async def events(self) -> AsyncIterator[Event]:
        """Partial / Commit / Error events; ends after finish() has flushed the final commits (or close())."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def finish(self) -> None:
        """No more audio; returns once the final commits are queued to events()."""
        if not self.closed:
            self.session.finish()
            self._engine._wake.set()
        await asyncio.shield(self._finished)

    def close(self) -> None:
        """Abort and discard (the client is gone): no more events, the slot is freed."""
        if self.closed:
            return
        self.closed = True
        self._engine._remove(self)
        self._end()

    @property
    def lag_s(self) -> float:
        return self.session.lag_s

    @property
    def rtf(self) -> float:
        return self.session.rtf

    @property
    def audio_s(self) -> float:
        return self.session.audio_s

    # -- called from the worker thread -----------------------------------------------------------------
    def _deliver(self, events: list[Event], end: bool) -> None:
        def put() -> None:
            for e in events:
                self._queue.put_nowait(e)
            if end:
                self._end()

        if events or end:
            self._loop.call_soon_threadsafe(put)

    def _end(self) -> None:
        self._queue.put_nowait(None)
        if not self._finished.done():
            self._finished.set_result(None)


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig = EngineConfig()) -> None:
        self.backend = backend
        self.config = config
        self._sessions: list[LiveSession] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rr = 0  # round-robin start index (fairness)
        self.rounds = 0
        self.batched_passes = 0  # batched encoder passes
        self.batched_decodes = 0  # groups whose decoder steps ran batched

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="dragoman-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        for ls in list(self._sessions):
            ls.close()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def n_sessions(self) -> int:
        return len(self._sessions)

    def open_session(self, config: SessionConfig, session_id: str | None = None) -> LiveSession:
        """A new live stream; raises EngineBusy when max_sessions are open."""
        if self._loop is None:
            raise StreamStateError("start the engine (await engine.start() or `async with`) before opening sessions")
        with self._lock:
            if len(self._sessions) >= self.config.max_sessions:
                raise EngineBusy(f"all {self.config.max_sessions} session slots are in use; retry later")
            ls = LiveSession(self, StreamingSession(self.backend, config, session_id), self._loop)
            self._sessions.append(ls)
        log.debug("[%s] opened (%d sessions)", ls.id, len(self._sessions))
        return ls

    def _remove(self, ls: LiveSession) -> None:
        with self._lock:
            if ls in self._sessions:
                self._sessions.remove(ls)

    # -- worker thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        while not self._stop:
            self._wake.wait(self.config.idle_wait_s)
            self._wake.clear()
            while not self._stop and self._round():
                pass

    def _round(self) -> bool:
        """One fair round: at most one update per session. Returns whether any work was done."""
        with self._lock:
            sessions = list(self._sessions)
        if not sessions:
            return False
        k = self._rr % len(sessions)
        self._rr += 1
        order = sessions[k:] + sessions[:k]
        ready = [ls for ls in order if not ls.closed and ls.session.has_work()]
        if not ready:
            return False
        self.rounds += 1
        step = self.config.max_batch if self.config.batch else 1
        for i in range(0, len(ready), step):
            self._run_group(ready[i : i + step])
        return True

    def _run_group(self, group: list[LiveSession]) -> None:
        t0 = time.perf_counter()
        work: list[tuple[LiveSession, Update]] = []
        for ls in group:
            try:
                upd = ls.session.next_update()
            except Exception as e:  # noqa: BLE001 - one stream's failure must not stop the others
                self._fail(ls, e)
                continue
            if upd is None:
                self._flush(ls)
            else:
                work.append((ls, upd))
        if not work:
            return
        try:
            encoded = self._encode([u.encoder_audio for _, u in work])
        except Exception:  # noqa: BLE001 - a batch failed: retry each session alone to find the culprit
            encoded = None
        t_enc = time.perf_counter() - t0
        # Set up every session's decoder job, then run their generation steps batched (one forward pass per
        # step for the whole group) when batching is on; a session's own failure only ends that session.
        pending: list[tuple[LiveSession, PendingDecode]] = []
        for i, (ls, upd) in enumerate(work):
            t1 = time.perf_counter()
            try:
                enc = encoded[i] if encoded is not None else self.backend.encode(upd.encoder_audio)
                pending.append((ls, ls.session.begin_decode(upd, enc, None)))
            except Exception as e:  # noqa: BLE001
                self._fail(ls, e)
                continue
            ls.session.stats.compute_s += t_enc / len(work) + time.perf_counter() - t1
        results: list[DecodeResult] | None = None
        if self.config.batch and len(pending) > 1:
            t1 = time.perf_counter()
            try:
                results = decode_batch(self.backend, [p.job for _, p in pending])
                self.batched_decodes += 1
            except Exception:  # noqa: BLE001 - decode each session alone below to find the culprit
                log.debug("batched decode failed; decoding sessions one by one", exc_info=True)
                results = None
            share = (time.perf_counter() - t1) / len(pending)
            for ls, _ in pending:
                ls.session.stats.compute_s += share
        for i, (ls, p) in enumerate(pending):
            t1 = time.perf_counter()
            try:
                res = results[i] if results is not None else decode_batch(self.backend, [p.job])[0]
                ls.session.end_decode(p, res)
            except Exception as e:  # noqa: BLE001
                self._fail(ls, e)
                continue
            ls.session.stats.compute_s += time.perf_counter() - t1
            self._flush(ls)

    def _encode(self, audios: list[np.ndarray]) -> list[torch.Tensor]:
        """Encoder outputs per session, unpadded: (1, S_i, d) each. A window filled to the model's whole trained
        window (a segment's last update, SessionConfig.last_window_s) is encoded alone: in a batch every other
        window would be padded to its length."""
        full = 0.9 * self.backend.trained_window_s * self.backend.sample_rate
        alone = [i for i, a in enumerate(audios) if full and len(a) >= full]
        rest = [i for i in range(len(audios)) if i not in alone]
        out: dict[int, torch.Tensor] = {i: self.backend.encode(audios[i]) for i in alone}
        if len(rest) == 1:
            out[rest[0]] = self.backend.encode(audios[rest[0]])
        elif rest:
            self.batched_passes += 1
            enc, valid = self.backend.encode_batch([audios[i] for i in rest])
            for j, i in enumerate(rest):
                out[i] = enc[j : j + 1] if valid is None else enc[j : j + 1, : int(valid[j].sum())]
        return [out[i] for i in range(len(audios))]

    def _flush(self, ls: LiveSession) -> None:
        events = ls.session.drain_events()
        done = ls.session.done
        if done:  # free the slot before the loop can see the end of the stream
            self._remove(ls)
        ls._deliver(events, end=done)

    def _fail(self, ls: LiveSession, e: Exception) -> None:
        log.error("[%s] model work failed; session ended: %s", ls.id, e, exc_info=e)
        ls.failed = True
        self._remove(ls)
        ls._deliver(
            [Error(code="internal", message=f"internal error in session {ls.id}: {type(e).__name__}")], end=True
        )
