"""Buffer trimming (SessionConfig.trim_s): committed audio leaves a long window's front, its text becomes prompt.

The session moves the returned tokens into its previous-text history and restarts the segment's sequence from
the kept ones; this module only decides where to cut and cuts the segment's audio and token times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..audio import SAMPLE_RATE
from ..text import ends_sentence, starts_word
from .config import SessionConfig
from .policy import ONSET_MARGIN_S
from .segment import Segment

# cuts shorter than this are not worth the prefix re-fill
_MIN_TRIM_S = 1.0


@dataclass(frozen=True)
class Trim:
    """One cut: how many committed tokens left the window, those of them that were shown (they go to the prompt),
    and its length."""

    n_tokens: int
    moved: list[int]
    n_samples: int


def trim(seg: Segment, config: SessionConfig, token_bytes: Callable[[int], bytes]) -> Trim | None:
    """Drop committed audio from the front of `seg` once its window is longer than trim_s; None: nothing cut.
    The segment's sequence is left to the caller (it still holds the moved tokens)."""
    window_s = seg.n_samples / SAMPLE_RATE
    if window_s <= config.trim_s or seg.state is None:
        return None
    j = trim_point(seg, token_bytes, config.trim_keep_words, sentence_only=window_s <= 2 * config.trim_s)
    if j is None:
        return None
    times = [t for t in seg.token_s[j:] if t is not None]
    # where the kept words' audio starts: the earliest frame they attend to, less a margin for the onset
    cut_s = min(times) - ONSET_MARGIN_S - seg.start_s
    n_cut = min(int(cut_s * SAMPLE_RATE), seg.n_decoded)
    if n_cut < _MIN_TRIM_S * SAMPLE_RATE:
        return None
    moved = seg.shown(j)
    audio = seg.audio()[n_cut:]
    seg.chunks, seg.n_samples = [audio], len(audio)
    seg.n_decoded -= n_cut
    seg.n_trimmed += n_cut
    seg.start_s += n_cut / SAMPLE_RATE
    seg.token_s = seg.token_s[j:]
    seg.hidden = seg.hidden[j:]
    return Trim(j, moved, n_cut)


def trim_point(seg: Segment, token_bytes: Callable[[int], bytes], keep_words: int, sentence_only: bool) -> int | None:
    """Index into `committed` of the latest word start (a sentence start if `sentence_only`) that leaves at
    least `keep_words` committed words after it and has known alignment times; None: nowhere to cut."""
    committed = seg.committed
    starts = [i for i, t in enumerate(committed) if i > 0 and starts_word(token_bytes(t))]
    if len(starts) < keep_words:
        return None
    for i in reversed(starts[: len(starts) - keep_words + 1]):
        if any(t is None for t in seg.token_s[i:]):
            return None
        if not sentence_only or ends_sentence(token_bytes(committed[i - 1])):
            return i
    return None
