"""What is committed and what stays partial: whole words (and clauses or sentences, by commit_unit), whole UTF-8
characters, spacing across segments, and the stream times of each Commit and Partial."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..audio import SAMPLE_RATE
from ..backend import Backend
from ..events import Commit, Partial
from ..text import (
    CLAUSE_END_MARKS,
    SENTENCE_END_MARKS,
    capitalise_sentences,
    ends_clause,
    ends_sentence,
    split_complete_utf8,
    starts_word,
)
from .config import SessionConfig
from .policy import Policy, attended_frame
from .segment import Segment, Update


def _ends_word_before(piece: bytes) -> bool:
    """The token after a word: it starts a new word, or is special (no text)."""
    return starts_word(piece) or not piece


class Committer:
    """One stream's committed text (`text_out`) and shown partial; turns a decision into events."""

    def __init__(self, backend: Backend, config: SessionConfig, policy: Policy) -> None:
        self.backend = backend
        self._held_words = policy.held_words
        # commit_unit: where a commit before a segment's end may stop, beyond a word end (translation reorders
        # words within a clause)
        self._unit_end: Callable[[bytes], bool] | None = {
            "word": None,
            "clause": ends_clause,
            "sentence": ends_sentence,
        }[config.commit_unit]
        self.text_out = ""  # everything committed (for spacing across segments)
        self.partial = ""

    def stable_end(self, tokens: list[int], k: int, next_token: int | None) -> int:
        """In an update that is not a segment's last: how many of the policy's `k` stable tokens to commit."""
        k = self._word_boundary(tokens, k, next_token)
        if self._unit_end is not None:
            k = self._unit_boundary(tokens, k, self._unit_end)
        return self._hold_back_words(tokens, k)

    def _word_boundary(self, tokens: list[int], k: int, next_token: int | None) -> int:
        # Commit whole words only: tokens[k] (or the token decoding stopped at) must start a new word,
        # otherwise "Ham" could be committed while "burg" is still uncertain.
        while k > 0:
            nxt = tokens[k] if k < len(tokens) else next_token
            if nxt is None:
                k -= 1
                continue
            if nxt == self.backend.eot or _ends_word_before(self.backend.token_bytes(nxt)):
                return k
            k -= 1
        return 0

    def _unit_boundary(self, tokens: list[int], k: int, unit_end: Callable[[bytes], bool]) -> int:
        """The longest prefix of tokens[:k] that ends a unit (a clause or a sentence)."""
        for i in range(k, 0, -1):
            if unit_end(self.backend.token_bytes(tokens[i - 1])):
                return i
        return 0

    def _hold_back_words(self, tokens: list[int], k: int) -> int:
        # Keep the last `held_words` words before the stable end as partial (see AlignAtt.held_words).
        for _ in range(self._held_words):
            if k == 0:
                break
            k -= 1
            while k > 0 and not starts_word(self.backend.token_bytes(tokens[k])):
                k -= 1
        return k

    def commit(
        self, seg: Segment, new: list[int], attention: np.ndarray | None, upd: Update, hidden: tuple[int, int] = (0, 0)
    ) -> tuple[Commit | None, float]:
        """Commit `new` (all of it enters the decoder's sequence); the tokens in new[hidden[0]:hidden[1]] are not
        shown (a repeat, see Repeats.repeated_prefix). Returns the Commit to emit (None: nothing to show) and the
        stream time the committed text now reaches."""
        shown = new[: hidden[0]] + new[hidden[1] :]
        data = seg.pending_bytes + b"".join(self.backend.token_bytes(t) for t in shown)
        if upd.final:
            done, seg.pending_bytes = data, b""
        else:
            done, seg.pending_bytes = split_complete_utf8(data)
        text = done.decode("utf-8", errors="replace")
        start = max(seg.committed_end_s, seg.start_s)
        if upd.final:
            end = seg.end_s
        elif attention is not None and len(attention) >= len(new):
            frame = attended_frame(attention[len(new) - 1], attention.shape[-1])
            end = seg.start_s + (frame + 1) * self.backend.frame_s
        else:
            end = seg.start_s + len(upd.audio) / SAMPLE_RATE
        end = min(max(end, start), seg.start_s + len(upd.audio) / SAMPLE_RATE)
        seg.token_s.extend(self._token_times(seg, len(new), attention, upd))
        seg.hidden.extend(hidden[0] <= i < hidden[1] for i in range(len(new)))
        seg.sequence.extend(new)
        seg.committed_end_s = end
        if not text:
            return None, end
        if not self.text_out:
            text = text.lstrip()
        if (
            self.text_out
            and len(seg.committed) == len(new)
            and not text[:1].isspace()
            and text[:1] not in SENTENCE_END_MARKS + CLAUSE_END_MARKS  # a carried sentence goes on
            and not self.text_out[-1:].isspace()
        ):
            text = " " + text  # a new segment's first words
        text = capitalise_sentences(self.text_out, text)
        if not text:
            return None, end
        self.text_out += text
        return Commit(text=text, start_s=round(start, 3), end_s=round(end, 3)), end

    def _token_times(self, seg: Segment, n: int, attention: np.ndarray | None, upd: Update) -> list[float | None]:
        if upd.final or attention is None or len(attention) < n:
            return [None] * n
        n_frames = attention.shape[-1]
        return [seg.start_s + attended_frame(attention[i], n_frames) * self.backend.frame_s for i in range(n)]

    def show(self, tokens: list[int], seg: Segment, upd: Update) -> Partial | None:
        """The partial after this update (`tokens`: what stays tentative); None: unchanged."""
        text = (seg.pending_bytes + b"".join(self.backend.token_bytes(t) for t in tokens)).decode("utf-8", "ignore")
        if upd.final:
            text = ""
        if not self.text_out:
            text = text.lstrip()
        text = capitalise_sentences(self.text_out, text)
        if text == self.partial:
            return None
        self.partial = text
        start = seg.committed_end_s or seg.start_s
        return Partial(
            text=text,
            start_s=round(start, 3) if text else None,
            end_s=round(seg.start_s + len(upd.audio) / SAMPLE_RATE, 3) if text else None,
        )
