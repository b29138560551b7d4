"""The per-stream state a StreamingSession keeps about its speech: segments (what is cached, what is committed)
and the units of model work it hands to the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from ..audio import SAMPLE_RATE
from ..kv_cache import DecoderState

if TYPE_CHECKING:  # decoder.py imports the guards, which read segments
    from .decoder import DecodeJob


@dataclass
class Segment:
    """One stretch of speech between pauses: its audio and what has been decided about it."""

    start_s: float  # stream time of audio[0]
    chunks: list[np.ndarray] = field(default_factory=list)  # the audio (pre-roll, speech, trailing pause)
    n_samples: int = 0
    closed: bool = False  # no more audio will be added
    speech_s: float = 0.0  # VAD speech inside (short bursts are dropped)
    n_decoded: int = 0  # samples the last update saw
    # decoder: `sequence` = start tokens (prompt) + committed tokens; `state` caches sequence[:-1]
    prompt: list[int] = field(default_factory=list)  # previous-text tokens inside the start tokens
    sequence: list[int] = field(default_factory=list)
    n_start: int = 0  # len(start tokens)
    state: DecoderState | None = None
    pending_bytes: bytes = b""  # committed bytes not yet forming whole UTF-8 characters
    committed_end_s: float = 0.0  # stream time the committed text reaches
    # stream time each committed token's alignment heads point at (parallel to `committed`; None: unknown)
    token_s: list[float | None] = field(default_factory=list)
    # parallel to `committed`: True for a token committed but not shown (a repeat, Repeats.repeated_prefix); the
    # decoder keeps it in its sequence, the next segment's prompt leaves it out (a repeat there invites an echo)
    hidden: list[bool] = field(default_factory=list)
    refill: bool = False  # the cached prefix no longer matches `sequence` (after a trim): re-fill it once
    n_trimmed: int = 0  # samples dropped from the front so far (trimming)
    # the previous segment carried in front (SessionConfig.context_s): its committed tokens, forced after the start
    # tokens (they are part of the start, not of `committed`), and its audio's length in samples at audio[0]
    context: list[int] = field(default_factory=list)
    n_context: int = 0
    use_prompt: bool = True  # cleared when a drift/echo guard fires, to retry without context
    # the tentative tokens after `committed` that the last update showed (and its guards let through)
    tentative: list[int] = field(default_factory=list)
    # the last non-empty `tentative`: kept when a later update is discarded (the screen went blank), so that a last
    # decode that drifts into the spoken language can still be continued from text that was translated
    last_shown: list[int] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        return self.start_s + self.n_samples / SAMPLE_RATE

    @property
    def committed(self) -> list[int]:
        return self.sequence[self.n_start :]

    def shown(self, n: int | None = None) -> list[int]:
        """The first `n` (all) committed tokens less the hidden ones: what the prompt may carry on."""
        committed = self.committed[:n]
        return [t for t, h in zip(committed, self.hidden + [False] * len(committed)) if not h]

    def audio(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, np.float32)

    @property
    def n_carried(self) -> int:
        """Samples of the carried segment still at the window's front (trimming cuts them first)."""
        return max(0, self.n_context - self.n_trimmed)

    def own_audio(self) -> np.ndarray:
        """The window's audio less what is left of the carried context at its front."""
        return self.audio()[self.n_carried :]

    def append(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)
        self.n_samples += len(samples)


@dataclass(frozen=True)
class Update:
    """Model work one session asks for: encode `audio`, then decode (the protocol in session.py)."""

    segment: Segment
    audio: np.ndarray  # the segment's audio so far (what the update decides about)
    final: bool
    pad_samples: int = 0  # silence appended for the encoder only (SessionConfig.pad_s)

    @property
    def encoder_audio(self) -> np.ndarray:
        """What the encoder sees: the audio, then `pad_samples` of digital silence."""
        if not self.pad_samples:
            return self.audio
        return np.concatenate([self.audio, np.zeros(self.pad_samples, np.float32)])


@dataclass(frozen=True, kw_only=True)
class PendingDecode:
    """An update between begin_decode and end_decode: its decoder job and what end_decode needs."""

    upd: Update
    job: DecodeJob
    n_frames: int  # encoder frames of real audio (padding excluded)
    encoder_out: Tensor  # kept for a retry without the previous-text prompt
    valid: Tensor | None


@dataclass
class Stats:
    compute_s: float = 0.0  # wall time of model work spent on this session
    n_updates: int = 0
