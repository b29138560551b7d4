"""Streaming policies: which generated tokens are stable enough to commit, which stay partial.

A policy sees only what a decoder update produced — token ids and, per token, the alignment heads'
cross-attention as a numpy array — never backend objects or torch tensors, so the same policy serves
every model family. Token ids here are relative to what is already committed: the session trims the
committed prefix off before asking.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

PolicyName = Literal["local-agreement", "alignatt"]


@dataclass(frozen=True)
class Hypothesis:
    """One decoder update's continuation after the committed prefix."""

    tokens: tuple[int, ...]  # generated text tokens (no end-of-text)
    # (n_tokens, heads, n_frames) alignment-head cross-attention of the step that produced each token;
    # None when the backend gave none
    attention: np.ndarray | None
    n_frames: int  # encoder frames of audio the hypothesis was decoded from
    final: bool  # no more audio will come for this segment: everything may be committed


class Policy(Protocol):
    name: str
    wants_attention: bool  # the session must collect attention for this policy

    def should_stop(self, attention_row: np.ndarray | None, n_frames: int) -> bool:
        """Called per generated token during decoding: True ends this update's hypothesis before that token."""

    def stable_count(self, hyp: Hypothesis) -> int:
        """How many leading tokens of `hyp` may be committed now."""

    def committed(self, n_tokens: int) -> None:
        """The session committed `n_tokens` more tokens (maybe fewer than stable_count: word boundaries)."""

    def reset(self) -> None:
        """A new segment starts: forget every stored hypothesis."""


@dataclass
class LocalAgreement:
    """LocalAgreement-n: commit the longest prefix on which the last n hypotheses agree."""

    n: int = 2
    name: str = "local-agreement"
    wants_attention: bool = False
    # the last n-1 hypotheses, each relative to the current committed prefix
    history: list[tuple[int, ...]] = field(default_factory=list)

    def should_stop(self, attention_row: np.ndarray | None, n_frames: int) -> bool:
        return False

    def stable_count(self, hyp: Hypothesis) -> int:
        if hyp.final:
            return len(hyp.tokens)
        self.history.append(hyp.tokens)
        self.history = self.history[-self.n :]
        if len(self.history) < self.n:
            return 0
        return _common_prefix(self.history)

    def committed(self, n_tokens: int) -> None:
        # Every stored hypothesis agreed on the committed tokens; shift them so they stay relative.
        self.history = [h[n_tokens:] for h in self.history]

    def reset(self) -> None:
        self.history.clear()


@dataclass
class AlignAtt:
    """AlignAtt: a token is stable unless its alignment heads attend into the last `frame_threshold` frames.

    Decoding stops at the first token that looks at the still-growing end of the audio: the words after it
    would be guesses about speech not heard yet.
    """

    frame_threshold: int = 20  # 0.4 s at Whisper's 20 ms frames
    name: str = "alignatt"
    wants_attention: bool = True

    def should_stop(self, attention_row: np.ndarray | None, n_frames: int) -> bool:
        if attention_row is None:
            return False
        return attended_frame(attention_row, n_frames) >= n_frames - self.frame_threshold

    def stable_count(self, hyp: Hypothesis) -> int:
        if hyp.final or hyp.attention is None:
            return len(hyp.tokens) if hyp.final else 0
        for i, row in enumerate(hyp.attention):
            if self.should_stop(row, hyp.n_frames):
                return i
        return len(hyp.tokens)

    def committed(self, n_tokens: int) -> None:
        pass

    def reset(self) -> None:
        pass


def make_policy(name: PolicyName, **kwargs) -> Policy:
    """A fresh policy object (policies hold per-stream state: one per session)."""
    if name == "local-agreement":
        return LocalAgreement(**kwargs)
    if name == "alignatt":
        return AlignAtt(**kwargs)
    raise ValueError(f"unknown policy {name!r}: use 'local-agreement' or 'alignatt'")


def attended_frame(attention: np.ndarray, n_frames: int) -> int:
    """The frame a token looks at: the median of the heads' argmax frames.

    Averaging the heads' weights first lets one head parked on a pause (an attention sink) drag the
    argmax there; the median of per-head peaks ignores such outliers. attention: (heads, frames) or (frames,)."""
    att = attention[..., :n_frames]
    if att.ndim == 1:
        return int(np.argmax(att))
    return int(np.median(np.argmax(att, axis=-1)))


def _common_prefix(seqs: list[tuple[int, ...]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n
