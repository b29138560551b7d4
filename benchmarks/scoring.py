"""Scoring a streamed recording against its reference sentences: quality (BLEU, chrF, WER) and latency
(StreamLAAL computation-unaware and -aware, StreamLAAL of the screen, finalisation lag, erasure, RTF).

A system's output is one word stream with emission times; it is re-segmented to the reference sentences by a
minimum-edit-distance alignment (as mwerSegmenter does), then scored per sentence and over the corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class Word(NamedTuple):
    """One emitted word and when (a tuple: runs are cached as JSON lists)."""

    text: str
    stream_s: float  # emitted at this stream time (audio fed so far)
    aware_s: float  # emitted at this computation-aware time (compute counted as it happened)


@dataclass
class Run:
    """One streamed recording: what a system emitted and when."""

    words: list[Word]
    displays: list[list[str]]  # words on screen (committed + partial) after each event
    compute_s: float
    audio_s: float
    windows: list[tuple[float, float]] = field(default_factory=list)  # (encoder window s, update s)
    n_erased: int | None = None  # erased words, when `displays` is not kept (cached runs)
    display_s: list[float] = field(default_factory=list)  # stream time of each display (parallel to `displays`)
    shown: list[float] | None = None  # shown_times(), when `displays` is not kept (cached runs)

    def shown_times(self) -> list[float] | None:
        """Per committed word, the stream time from which the screen showed it, in its final form and place,
        without a change until the end (partial text counts): at the latest its commit. None: displays unknown."""
        if self.shown is not None:
            return self.shown
        if not self.display_s or len(self.display_s) != len(self.displays):
            return None
        final = [w.text for w in self.words]
        since: list[float | None] = [None] * len(final)
        for shown, t in zip(self.displays, self.display_s):
            for j, word in enumerate(final):
                if j >= len(shown) or shown[j] != word:
                    since[j] = None  # gone or changed: it counts again from its next showing
                elif since[j] is None:
                    since[j] = t
        return [w.stream_s if t is None else min(t, w.stream_s) for t, w in zip(since, self.words)]

    def erased(self) -> int:
        """Words shown and then taken back (a word that changes on screen counts once per change)."""
        if self.n_erased is not None:
            return self.n_erased
        total = 0
        for prev, cur in zip(self.displays, self.displays[1:]):
            k = 0
            while k < min(len(prev), len(cur)) and prev[k] == cur[k]:
                k += 1
            total += len(prev) - k
        return total


@dataclass(frozen=True)
class Span:
    """Where a reference sentence lies in the stream."""

    start_s: float
    end_s: float
    reference: str


def _norm(w: str) -> str:
    return "".join(c for c in w.lower() if c.isalnum())


def align_to_sentences(hyp: Sequence[str], refs: Sequence[str]) -> list[list[int]]:
    """Hypothesis word indices grouped per reference sentence (minimum edit distance alignment of the
    hypothesis to the concatenated references)."""
    ref_words, owner = [], []
    for k, r in enumerate(refs):
        for w in r.split():
            ref_words.append(_norm(w))
            owner.append(k)
    h = [_norm(w) for w in hyp]
    n, m = len(h), len(ref_words)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    ref_arr = np.array(ref_words, dtype=object)
    for i in range(1, n + 1):  # row by row, vectorised over the reference
        sub = d[i - 1, :-1] + (ref_arr != h[i - 1])
        row = np.minimum(d[i - 1, 1:] + 1, sub)
        # insertions along the row: d[i, j] = min(row[j-1], d[i, j-1] + 1), a running minimum
        cur = np.empty(m + 1, np.int32)
        cur[0] = i
        for j in range(1, m + 1):
            cur[j] = min(row[j - 1], cur[j - 1] + 1)
        d[i] = cur
    groups: list[list[int]] = [[] for _ in refs]
    i, j = n, m
    while i > 0:
        if j > 0 and d[i, j] == d[i - 1, j - 1] + (h[i - 1] != ref_words[j - 1]):
            groups[owner[j - 1]].append(i - 1)
            i, j = i - 1, j - 1
        elif j > 0 and d[i, j] == d[i, j - 1] + 1:
            j -= 1
        else:
            groups[owner[max(j - 1, 0)] if m else 0].append(i - 1)
            i -= 1
    return [sorted(g) for g in groups]


def laal(delays: Sequence[float], source_s: float, n_ref: int) -> float:
    """Length-adaptive average lagging of one sentence (delays in seconds from the sentence start)."""
    if not delays:
        return source_s
    rate = source_s / max(len(delays), n_ref)
    total, tau = 0.0, 0
    for i, d in enumerate(delays):
        total += d - i * rate
        tau = i + 1
        if d >= source_s:
            break
    return total / tau


def wer_text(text: str) -> str:
    """Text as WER compares it: lower case, punctuation dropped (apostrophes inside words kept)."""
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).replace(" '", " ").split())


@dataclass
class SetScore:
    """One system on one language: sentence hypotheses and the delays behind each metric."""

    hyps: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    laal_cu: list[float] = field(default_factory=list)
    laal_ca: list[float] = field(default_factory=list)
    laal_shown: list[float] = field(default_factory=list)  # StreamLAAL of the screen (Run.shown_times)
    final_lag: list[float] = field(default_factory=list)
    n_words: int = 0
    n_erased: int = 0
    compute_s: float = 0.0
    audio_s: float = 0.0

    def add(self, run: Run, spans: Sequence[Span], timed: bool = True) -> None:
        refs = [s.reference for s in spans]
        hyp_words = [w.text for w in run.words]
        groups = align_to_sentences(hyp_words, refs)
        self.hyps += [" ".join(hyp_words[i] for i in g) for g in groups]
        self.refs += refs
        self.n_words += len(hyp_words)
        self.n_erased += run.erased()
        self.compute_s += run.compute_s
        self.audio_s += run.audio_s
        if not timed:
            return
        shown = run.shown_times()
        for span, g in zip(spans, groups):
            src = span.end_s - span.start_s
            n_ref = len(span.reference.split())
            self.laal_cu.append(laal([run.words[i].stream_s - span.start_s for i in g], src, n_ref))
            self.laal_ca.append(laal([run.words[i].aware_s - span.start_s for i in g], src, n_ref))
            if shown is not None:
                self.laal_shown.append(laal([shown[i] - span.start_s for i in g], src, n_ref))
            if g:
                self.final_lag.append(run.words[g[-1]].stream_s - span.end_s)

    def metrics(self) -> dict[str, float]:
        import jiwer
        import sacrebleu

        nan = float("nan")
        out = {
            "bleu": sacrebleu.corpus_bleu(self.hyps, [self.refs]).score,
            "chrf": sacrebleu.corpus_chrf(self.hyps, [self.refs]).score,
            "wer": 100 * jiwer.wer([wer_text(r) for r in self.refs], [wer_text(h) or "-" for h in self.hyps]),
            "n": len(self.refs),
        }
        out.update(
            laal=float(np.mean(self.laal_cu)) if self.laal_cu else nan,
            laal_ca=float(np.mean(self.laal_ca)) if self.laal_ca else nan,
            laal_shown=float(np.mean(self.laal_shown)) if self.laal_shown else nan,
            final_lag=float(np.mean(self.final_lag)) if self.final_lag else nan,
            erasure=self.n_erased / max(1, self.n_words),
            rtf=self.compute_s / self.audio_s if self.audio_s else nan,
        )
        return out
