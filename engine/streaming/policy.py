"""Streaming policies: which generated tokens are stable enough to commit, which stay partial.

A policy sees only what a decoder update produced — token ids and, per token, the alignment heads'
cross-attention as a numpy array — never backend objects or torch tensors, so the same policy serves
every model family. Token ids here are relative to what is already committed: the session trims the
committed prefix off before asking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:  # config.py imports PolicyName from here
    from .config import SessionConfig

PolicyName = Literal["local-agreement", "alignatt"]
# Alignment heads point inside a word, not at its onset: the word's audio starts up to this much earlier than
# the frame attended_frame gives (used where a time is cut or compared against committed audio).
ONSET_MARGIN_S = 0.3


@dataclass(frozen=True)
class Hypothesis:
    """One decoder update's continuation after the committed prefix."""

    tokens: tuple[int, ...]  # generated text tokens (no end-of-text)
    # (n_tokens, heads, n_frames) alignment-head cross-attention of the step that produced each token;
    # None when the backend gave none
    attention: np.ndarray | None
    n_frames: int  # encoder frames of audio the hypothesis was decoded from
    final: bool  # no more audio will come for this segment: everything may be committed
    logprobs: tuple[float, ...] = ()  # per token, when the decoder gave them


class Policy(Protocol):
    name: str
    wants_attention: bool  # the session must collect attention for this policy
    held_words: int  # words before the stable end that still stay partial until the next update

    def begin_update(self) -> None:
        """A decoder update starts generating (should_stop may keep state within one update)."""

    def should_stop(
        self, attention_row: np.ndarray | None, n_frames: int, *, final: bool = False, content: bool = True
    ) -> bool:
        """Called per generated token during decoding: True ends this update's hypothesis before that token.

        content=False: the token has no letters or digits (punctuation); its attention says little about
        where in the audio the text is."""

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
    held_words: int = 0
    # the last n-1 hypotheses, each relative to the current committed prefix
    history: list[tuple[int, ...]] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: SessionConfig) -> LocalAgreement:
        return cls(n=config.agreement_n)

    def begin_update(self) -> None:
        pass

    def should_stop(
        self, attention_row: np.ndarray | None, n_frames: int, *, final: bool = False, content: bool = True
    ) -> bool:
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
    would be guesses about speech not heard yet. With `confirm_first`, a segment's first words must also come
    out the same in two consecutive updates (LocalAgreement-2 on the AlignAtt-bounded hypotheses) before they
    are committed: from a second of audio the model often guesses ("Hello, hello, hello," for "Bonjour à tous"),
    and once committed a guess conditions everything after it. Later words have committed context and skip it.
    """

    frame_threshold: int = 20  # 0.4 s at Whisper's 20 ms frames
    confirm_first: bool = False
    # every commit, not only a segment's first, must also agree with the previous update's hypothesis
    # (LocalAgreement-2 bounded by AlignAtt)
    agree: bool = False
    # A token attending this many frames before the furthest frame of the update so far starts over: the model
    # has run out of audio and re-translates from the beginning ("... cinema. Today we will talk about ...").
    # Only in updates that are not a segment's last (there a wrong stop would lose speech). Word reordering in
    # translation jumps back far less than 2 s.
    rewind_frames: int = 100
    # a token decoded with a lower probability (and everything after it) is not stable yet
    min_prob: float = 0.0
    agree_unsure: bool = False  # ...unless the previous update decoded the same token there
    # The words AlignAtt stopped next to are the least certain: their source word may not be complete
    # ("Kranken|haus" -> "cramp") even though the model has moved on (SessionConfig.hold_words).
    held_words: int = 0
    name: str = "alignatt"
    wants_attention: bool = True
    previous: tuple[int, ...] | None = None  # last hypothesis while nothing of the segment is committed
    started: bool = False  # something of this segment is committed
    frontier: int = -1  # furthest attended frame in the current update

    @classmethod
    def from_config(cls, config: SessionConfig) -> AlignAtt:
        return cls(
            frame_threshold=config.frame_threshold,
            confirm_first=config.confirm_first,
            agree=config.agree,
            min_prob=config.min_prob,
            agree_unsure=config.agree_unsure,
            held_words=config.held_words,
        )

    def begin_update(self) -> None:
        self.frontier = -1

    def should_stop(
        self, attention_row: np.ndarray | None, n_frames: int, *, final: bool = False, content: bool = True
    ) -> bool:
        # A segment's last update is never cut by attention: a stop there loses the rest of what was said, and
        # the heads do park on sink frames (a punctuation mark on the window's start, "a.m" on the appended
        # silence). Restarts are caught on the text instead (the session's duplicate guard). Punctuation is
        # skipped for the same reason.
        if attention_row is None or not content or final:
            return False
        frame = attended_frame(attention_row)
        if self.frontier >= 0 and frame < self.frontier - self.rewind_frames:
            return True
        self.frontier = max(self.frontier, frame)
        return frame >= n_frames - self.frame_threshold

    def stable_count(self, hyp: Hypothesis) -> int:
        if hyp.final or hyp.attention is None:
            return len(hyp.tokens) if hyp.final else 0
        k = len(hyp.tokens)
        for i, row in enumerate(hyp.attention):  # decoding already stopped here unless it ran without this policy
            if attended_frame(row) >= hyp.n_frames - self.frame_threshold:
                k = i
                break
        if self.min_prob > 0.0 and self.agree_unsure:
            # an unsure token still counts as stable when the previous update decoded it too
            prev, self.previous = self.previous, hyp.tokens
            n_agreed = _common_prefix([prev, hyp.tokens]) if prev is not None else 0
            k = min(k, confident_prefix(hyp, self.min_prob, n_agreed))
        else:
            k = min(k, confident_prefix(hyp, self.min_prob))
        if self.agree or (self.confirm_first and not self.started):
            prev, self.previous = self.previous, hyp.tokens
            k = 0 if prev is None else min(k, _common_prefix([prev, hyp.tokens[:k]]))
        return k

    def committed(self, n_tokens: int) -> None:
        if n_tokens:
            self.started = True
            # with `agree` the last hypothesis stays, relative to the new committed prefix
            keep = self.agree or (self.agree_unsure and self.min_prob > 0.0)
            self.previous = self.previous[n_tokens:] if keep and self.previous is not None else None

    def reset(self) -> None:
        self.started, self.previous = False, None


POLICIES: dict[str, type[LocalAgreement | AlignAtt]] = {"local-agreement": LocalAgreement, "alignatt": AlignAtt}


def make_policy(name: PolicyName, **kwargs: Any) -> Policy:
    """A fresh policy object (policies hold per-stream state: one per session); `kwargs` set its fields."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: use 'local-agreement' or 'alignatt'")
    return POLICIES[name](**kwargs)


def policy_for(config: SessionConfig) -> Policy:
    """The fresh policy a session with `config` uses, its settings taken from the config."""
    return POLICIES[config.policy].from_config(config)


def attended_frame(attention: np.ndarray, n_frames: int | None = None) -> int:
    """The frame a token looks at: the median of the heads' argmax frames.

    Averaging the heads' weights first lets one head parked on a pause (an attention sink) drag the
    argmax there; the median of per-head peaks ignores such outliers. attention: (heads, frames) or (frames,);
    n_frames=None looks at every frame (padding included: a token attending there is at the audio's end)."""
    att = attention if n_frames is None else attention[..., :n_frames]
    if att.ndim == 1:
        return int(np.argmax(att))
    return int(np.median(np.argmax(att, axis=-1)))


def confident_prefix(hyp: Hypothesis, min_prob: float, n_agreed: int = 0) -> int:
    """How many leading tokens of `hyp` were each decoded with probability >= min_prob or lie in its first
    `n_agreed` tokens (all of them without logprobs)."""
    if min_prob <= 0.0 or not hyp.logprobs:
        return len(hyp.tokens)
    floor = float(np.log(min_prob))
    for i, lp in enumerate(hyp.logprobs):
        if lp < floor and i >= n_agreed:
            return i
    return len(hyp.tokens)


def _common_prefix(seqs: list[tuple[int, ...]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n
