"""VAD segmentation: incoming 16 kHz audio becomes speech segments between pauses (silence is never decoded).

Without a VAD (SessionConfig.use_vad=False) every sample is speech and segments are cut at max_segment_s only.
A segment's updates are due every update_s (chunk_s) of new speech; a closed segment's next update is its last.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from ..audio import SAMPLE_RATE
from .config import SessionConfig
from .segment import Segment, Update
from .vad import StreamVad


class Segmenter:
    """The segments of one stream: front is being decoded, back may still be growing.

    `on_idle(t)` is told the stream time up to which nothing is pending (silence, or a dropped click);
    `trained_window_s` is the model's (Backend.trained_window_s): how far a last update may be filled."""

    def __init__(
        self,
        config: SessionConfig,
        on_idle: Callable[[float], None],
        log: logging.LoggerAdapter[logging.Logger],
        trained_window_s: float = 0.0,
    ) -> None:
        self.config = config
        self._on_idle = on_idle
        self.log = log
        self._vad = StreamVad(config.vad) if config.use_vad else None
        self._preroll: deque[np.ndarray] = deque()
        self.segments: deque[Segment] = deque()
        self.n_consumed = 0  # samples that went through the VAD
        self._vad_time = 0.0  # stream time up to which the VAD has classified windows
        self._pad = int(config.pad_s * SAMPLE_RATE)
        # a segment's last update is filled with silence to this many samples (SessionConfig.last_window_s)
        self._last_window = int(min(config.last_window_s, trained_window_s) * SAMPLE_RATE)

    def feed(self, x: np.ndarray) -> None:
        """Cut incoming audio into speech segments (or one long segment without a VAD)."""
        self.n_consumed += len(x)
        if self._vad is None:
            t = self.n_consumed / SAMPLE_RATE - len(x) / SAMPLE_RATE
            limit = int(self.config.max_segment_s * SAMPLE_RATE)
            while x.size:
                seg = self._open(t)
                piece, x = x[: limit - seg.n_samples], x[limit - seg.n_samples :]
                seg.append(piece)
                seg.speech_s += len(piece) / SAMPLE_RATE
                t += len(piece) / SAMPLE_RATE
                if seg.n_samples >= limit:
                    self._close(seg)
            return
        pad = int(self.config.vad.pad_s * SAMPLE_RATE)
        t = self._vad_time
        for w in self._vad.process(x):
            t += len(w.samples) / SAMPLE_RATE
            cur = self.segments[-1] if self.segments and not self.segments[-1].closed else None
            if w.opened:
                pre = np.concatenate(list(self._preroll)) if self._preroll else np.zeros(0, np.float32)
                pre = pre[-pad:] if pad else pre[:0]
                cur = self._open(t - (len(w.samples) + len(pre)) / SAMPLE_RATE)
                cur.append(pre)
                self._preroll.clear()
            if cur is not None:
                cur.append(w.samples)
                if w.prob >= self.config.vad.neg_threshold:
                    cur.speech_s += len(w.samples) / SAMPLE_RATE
                if w.closed:
                    self._close(cur)
                else:
                    self._split_if_long(cur)
            else:
                self._preroll.append(w.samples)
                while len(self._preroll) > 1 + pad // 512:
                    self._preroll.popleft()
                if not self.segments:
                    self._on_idle(t)  # nothing pending: silence counts as done
        self._vad_time = t

    def close_all(self) -> None:
        """The stream ended: the VAD's last samples join the open segment, and every segment closes."""
        if self._vad is not None:
            rest = self._vad.flush()
            if self.segments and not self.segments[-1].closed and rest.size:
                self.segments[-1].append(rest)
        for seg in list(self.segments):
            if not seg.closed:
                self._close(seg)

    def due(self) -> Update | None:
        """The front segment's next update, if enough new speech arrived (or it is closed: its last update)."""
        if not self.segments:
            return None
        seg = self.segments[0]
        if seg.closed:
            audio = seg.audio()
            return Update(seg, audio, final=True, pad_samples=self.pad_for(len(audio), final=True))
        new = seg.n_samples - seg.n_decoded
        need = self.config.update_s if seg.n_decoded else max(self.config.update_s, self.config.min_first_s)
        if new >= need * SAMPLE_RATE:
            return Update(seg, seg.audio(), final=False, pad_samples=self.pad_for(seg.n_samples, final=False))
        return None

    def pad_for(self, n_samples: int, final: bool) -> int:
        """Silence appended to an update of `n_samples` for the encoder: pad_s, a last update's up to last_window_s."""
        return max(self._pad, self._last_window - n_samples) if final else self._pad

    def pop(self) -> Segment:
        """The front segment is done (its last update ran)."""
        return self.segments.popleft()

    @property
    def pending_s(self) -> float:
        """Audio inside segments that no update has seen yet."""
        return sum((s.n_samples - s.n_decoded) / SAMPLE_RATE for s in self.segments)

    def _open(self, start_s: float) -> Segment:
        if self.segments and not self.segments[-1].closed:
            return self.segments[-1]
        seg = Segment(start_s=max(0.0, start_s))
        self.segments.append(seg)
        return seg

    def _split_if_long(self, seg: Segment) -> None:
        # Before the window fills up, close the segment (its last update commits everything) and continue
        # in a fresh one: the encoder never sees more than max_segment_s.
        if seg.n_samples >= self.config.max_segment_s * SAMPLE_RATE:
            self.log.debug("segment reached %.1f s without a pause: forced commit", seg.n_samples / SAMPLE_RATE)
            self._close(seg)
            if self._vad is not None and self._vad.state.in_speech:
                self._open(seg.end_s)

    def _close(self, seg: Segment) -> None:
        seg.closed = True
        if seg.speech_s < self.config.vad.min_speech_s:
            self.segments.remove(seg)  # a click or a cough: nothing to decode
            if not self.segments:
                self._on_idle(seg.end_s)
