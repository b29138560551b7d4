"""Carrying a short segment in front of the next (SessionConfig.context_s): whisper_streaming decodes a buffer of
several utterances, and Whisper translates a short one better as the continuation of the one before than alone.

The next segment's window starts with the carried segment's own audio, and its decoder's start tokens end with
that segment's committed text (Prompt.start), which the decoder continues and nothing commits again. This module
only decides what is carried and moves the audio on and off a segment's front; the session does the model work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from .config import SessionConfig
from .segment import Segment

# A segment is carried in front of the next one only across a pause this short (seconds): after a longer one the
# speaker has likely moved on
CONTEXT_GAP_S = 3.0


@dataclass(frozen=True)
class Carried:
    """A closed segment kept to go in front of the next one: its own audio, its text as the prompt took it, and the
    stream time it ended."""

    audio: np.ndarray
    tokens: list[int]
    end_s: float


def carried_from(seg: Segment, shown: list[int], config: SessionConfig) -> Carried | None:
    """What of the closed `seg` (`shown`: its text as it joined the prompt's history) goes in front of the next
    segment; None: nothing (no text, or longer than SessionConfig.carried_s)."""
    own = seg.own_audio()
    if not shown or not 0 < len(own) <= config.carried_s * SAMPLE_RATE:
        return None
    return Carried(own, shown, seg.end_s)


def carry_into(seg: Segment, carried: Carried | None, config: SessionConfig) -> bool:
    """Put `carried` in front of `seg`, about to be decoded for the first time; False: it does not go (none, after
    a long pause, or the window would not fit)."""
    if carried is None or seg.start_s - carried.end_s > CONTEXT_GAP_S:
        return False
    if (seg.n_samples + len(carried.audio)) / SAMPLE_RATE + config.pad_s > config.max_segment_s:
        return False
    seg.chunks = [carried.audio, *seg.chunks]
    seg.n_samples += len(carried.audio)
    seg.n_context = len(carried.audio)
    seg.start_s -= len(carried.audio) / SAMPLE_RATE
    seg.committed_end_s = seg.start_s + seg.n_context / SAMPLE_RATE  # its own commits start after the carried audio
    seg.context = carried.tokens
    return True


def uncarry(seg: Segment) -> int:
    """Take what is left of the carried segment off `seg`'s front (audio and text); the samples removed."""
    n = seg.n_carried
    audio = seg.audio()[n:]
    seg.chunks, seg.n_samples, seg.n_decoded = [audio], len(audio), max(0, seg.n_decoded - n)
    seg.start_s += n / SAMPLE_RATE
    seg.n_context, seg.context = 0, []
    return n
