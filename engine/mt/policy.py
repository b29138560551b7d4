"""What the MT stage translates, and when: units of committed source text (no torch here).

The speech session commits source text append-only, word by word. Translating word by word would change earlier
target words as later source words arrive (German verbs go last), and a commit can never be taken back. So the
stage translates *units* — whole sentences (default) or clauses — once their last word is committed, and commits
each unit's translation append-only; what is committed but not yet a whole unit, plus the speech model's partial
tail, is translated again as it grows and shown as the (replaceable) target partial.

A unit ends at
  - a sentence end: . ! ? … 。 ！ ？ (with any closing quote or bracket) followed by a space or by the end of the
    committed text (Whisper writes the final stop of a sentence together with its last word);
  - with unit="clause", also a , ; : once the clause has at least `min_clause_words` words;
  - a pause: nothing pending in the speech model's partial and no new commit for `pause_s` of stream time
    (a speaker who stops mid-sentence still gets a translation);
  - finish(): whatever is left.
Every committed source character belongs to exactly one unit, in order: nothing is translated twice or skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from ..text import CLAUSE_END, SENTENCE_END

Unit = Literal["sentence", "clause", "agreement"]


@dataclass(frozen=True)
class MTPolicyConfig:
    # what one translation covers: "sentence"; "clause" (sooner, a little worse); "agreement": sentences, but
    # within one the target words that two consecutive translations of the growing source agree on are committed
    # early (local agreement), and the sentence's final translation is forced to continue them (stage.py)
    unit: Unit = "sentence"
    min_clause_words: int = 4  # a clause shorter than this waits for more (", and" is no unit)
    pause_s: float = 2.0  # stream seconds without new source text after which an unfinished unit is translated
    partial_every_s: float = 0.5  # at most one partial translation per this much stream time (0: every change)
    partials: bool = True  # translate the uncommitted tail for display (costs one greedy decode per update)

    def __post_init__(self) -> None:
        if self.unit not in ("sentence", "clause", "agreement"):
            raise ConfigError(f"MT unit must be 'sentence', 'clause' or 'agreement', got {self.unit!r}")
        if self.pause_s <= 0 or self.min_clause_words < 1 or self.partial_every_s < 0:
            raise ConfigError("pause_s must be > 0, min_clause_words >= 1 and partial_every_s >= 0")


@dataclass(frozen=True)
class SourceUnit:
    """A complete unit of committed source text, ready to be translated once and committed."""

    text: str
    start_s: float  # stream time of its first word's audio
    end_s: float  # stream time of its last word's audio
    ready_s: float  # stream time at which it became complete (its commit, the pause, or finish)
    reason: Literal["sentence", "clause", "pause", "finish"]


class SourceSegmenter:
    """Cuts the committed source stream into units. Feed it commits, the speech partial and the clock."""

    def __init__(self, config: MTPolicyConfig = MTPolicyConfig()) -> None:
        self.config = config
        self._pending = ""  # committed source text that is not yet part of a unit
        self._spans: list[tuple[int, float, float]] = []  # (end offset in _pending, start_s, end_s) per commit
        self._speech_partial = ""
        self._last_commit_s = 0.0  # stream time of the latest commit (or of the latest unit cut)
        self.n_units = 0

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def pending(self) -> str:
        """Committed source text waiting for the end of its unit."""
        return self._pending.strip()

    @property
    def spans(self) -> tuple[float, float]:
        """Stream times (start_s, end_s) of the pending text (0, 0 when nothing is pending)."""
        if not self._spans:
            return 0.0, 0.0
        return self._spans[0][1], self._spans[-1][2]

    @property
    def tail(self) -> str:
        """What the target partial shows a translation of: pending committed text + the speech partial."""
        return " ".join(t for t in (self._pending.strip(), self._speech_partial.strip()) if t)

    # -- feeding -------------------------------------------------------------------------------------------
    def commit(self, text: str, start_s: float, end_s: float, now_s: float) -> list[SourceUnit]:
        """Committed source text (as the speech session emitted it); returns the units it completes."""
        if not text:
            return []
        if not self._pending.strip():
            self._pending, self._spans = "", []
            text = text.lstrip()
        self._pending += text
        self._spans.append((len(self._pending), start_s, end_s))
        self._last_commit_s = max(now_s, end_s)
        return self._cut_complete(now_s)

    def partial(self, text: str) -> None:
        """The speech model's current uncertain tail (replaces the previous one)."""
        self._speech_partial = text

    def tick(self, now_s: float) -> list[SourceUnit]:
        """Advance the clock: after a pause, an unfinished unit is translated as it is."""
        if (
            self._pending.strip()
            and not self._speech_partial.strip()
            and now_s - self._last_commit_s >= self.config.pause_s
        ):
            return [self._cut(len(self._pending), now_s, "pause")]
        return []

    def finish(self, now_s: float) -> list[SourceUnit]:
        """The stream ended: everything committed becomes a unit."""
        self._speech_partial = ""
        units = self._cut_complete(now_s)
        if self._pending.strip():
            units.append(self._cut(len(self._pending), now_s, "finish"))
        return units

    # -- cutting -------------------------------------------------------------------------------------------
    def _cut_complete(self, now_s: float) -> list[SourceUnit]:
        units: list[SourceUnit] = []
        while True:
            end, reason = self._next_boundary()
            if end is None:
                return units
            units.append(self._cut(end, now_s, reason))

    def _next_boundary(self) -> tuple[int | None, str]:
        text = self._pending
        m = SENTENCE_END.search(text)
        best: tuple[int | None, str] = (m.end(), "sentence") if m else (None, "")
        if self.config.unit == "clause":
            for c in CLAUSE_END.finditer(text):
                if best[0] is not None and c.end() >= best[0]:
                    break
                if len(text[: c.end()].split()) >= self.config.min_clause_words:
                    return c.end(), "clause"
        return best

    def _cut(self, end: int, now_s: float, reason: str) -> SourceUnit:
        """Turn _pending[:end] into a unit; its times come from the commits that overlap it."""
        text = self._pending[:end].strip()
        first = self._spans[0]
        last = next((s for s in self._spans if s[0] >= end), self._spans[-1])
        unit = SourceUnit(text, first[1], last[2], now_s, reason)  # type: ignore[arg-type]
        rest = self._pending[end:]
        # a commit that straddles the boundary stays with the remainder too (its times are the best known)
        self._pending, self._spans = rest, [(off - end, s, e) for off, s, e in self._spans if off > end]
        if not rest.strip():
            self._pending, self._spans = "", []
        self.n_units += 1
        return unit
