"""Caption files (WebVTT and SRT) built from a stream's commits, written as they become final.

Commits are append-only and carry stream time (`engine.events.Commit.start_s/end_s`), so a caption file can be
written incrementally: every finished cue is appended and flushed at once, and a crash or Ctrl-C keeps everything
up to the last finished cue (close() also writes the cue still being filled).

API for the commands (`dragoman file`, `stream`, `mic`, and the web page's download):

    from app.captions import CaptionWriter, write_captions

    # all commits at once (offline): the format follows the suffix, .vtt or .srt
    write_captions(commits, "talk.vtt")

    # live: one writer per file, fed as commits arrive
    with CaptionWriter("talk.srt") as captions:
        for ev in events:
            if isinstance(ev, Commit):
                captions.add(ev)
            captions.advance(audio_seconds_received)   # optional: closes a cue once a pause is certain
    # leaving the block (or close()) writes the last cue; the file is then complete and valid

    format_captions(cues, "vtt") / build_cues(commits) give the text or the cues without touching a file.

Cue rules (CaptionConfig): a cue is closed at a sentence end, at
a pause between words of at least pause_s, and before it would exceed max_lines lines of max_line_chars characters
or last longer than max_duration_s (then preferably after its last comma or other clause end, else before its
last conjunction, when that is past its first third). A cue lasts at least min_duration_s; when that would overlap
the next cue, the next cue starts later instead (cues never overlap, which some players render badly).
Word times inside a commit are interpolated by character count, because commits carry one span for all words.

The rules' numbers and patterns live in web/caption-rules.json, which the page's web/captions.js reads too: the
page's downloads and these files follow one rule (tests/web/test_captions_js.py runs both on the same commits and
compares the files byte for byte). Lengths count code points, times round half up to the millisecond, and words
split at the file's `space` characters, so the two languages agree exactly.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, TextIO

from engine.errors import ConfigError
from engine.events import Commit

log = logging.getLogger(__name__)

CaptionFormat = Literal["vtt", "srt"]
FORMATS: dict[str, CaptionFormat] = {".vtt": "vtt", ".webvtt": "vtt", ".srt": "srt"}

# web/caption-rules.json: one rule for these files and the page's downloads
RULES_PATH = Path(__file__).resolve().parent.parent / "web" / "caption-rules.json"
_RULES = json.loads(RULES_PATH.read_text(encoding="utf-8"))
# Sentence-final punctuation, Latin and CJK, optionally followed by closing quotes or brackets.
_SENTENCE_END = re.compile(_RULES["sentence_end"])
# Clause ends: a good place to break a sentence that does not fit one cue.
_CLAUSE_END = re.compile(_RULES["clause_end"])
# English conjunctions (translation output is English): the next best break is just before one of these.
_CONJUNCTIONS = frozenset(_RULES["conjunctions"])
# What separates words (an explicit class: str.split() and JavaScript's \s disagree on a few characters).
_SPACE = re.compile(_RULES["space"])
_SPACES = re.compile(_RULES["space"] + "+")


@dataclass(frozen=True)
class CaptionConfig:
    # defaults from web/caption-rules.json
    max_line_chars: int = _RULES["max_line_chars"]  # 42: the usual broadcast/Netflix limit for Latin scripts
    max_lines: int = _RULES["max_lines"]  # 2 lines per cue; more covers too much of the picture
    min_duration_s: float = _RULES["min_duration_s"]  # 1 s: shorter cues flash by unread
    max_duration_s: float = _RULES["max_duration_s"]  # 7 s: longer ones lag behind the speaker
    pause_s: float = _RULES["pause_s"]  # 0.7 s: a silence this long between words starts a new cue

    def __post_init__(self) -> None:
        if self.max_line_chars < 8 or self.max_lines < 1:
            raise ConfigError("captions need at least one line of at least 8 characters")
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise ConfigError("caption durations must satisfy 0 < min_duration_s <= max_duration_s")
        if self.pause_s <= 0:
            raise ConfigError("pause_s must be positive")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    lines: tuple[str, ...]  # already wrapped; never empty, no line contains a newline

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class _Word:
    text: str
    start_s: float
    end_s: float


def _round_ms(seconds: float) -> float:
    """Seconds to whole milliseconds, halves up (Python's round() rounds halves to even; JavaScript cannot)."""
    return math.floor(seconds * 1000 + 0.5) / 1000


def caption_format(path: str | Path) -> CaptionFormat:
    """The caption format a file name asks for, from its suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: caption files must end in .vtt or .srt")
    return fmt


def wrap_lines(words: list[str], max_line_chars: int, max_lines: int) -> tuple[str, ...] | None:
    """Words as at most `max_lines` balanced lines of at most `max_line_chars`, or None when they do not fit."""
    text = " ".join(words)
    if len(text) <= max_line_chars:
        return (text,)
    if max_lines == 1:
        return None
    # Balanced split (shortest longest line): two half-full lines read faster than one full and one stub.
    best: tuple[str, ...] | None = None
    for i in range(1, len(words)):
        head = " ".join(words[:i])
        if len(head) > max_line_chars:
            break
        rest = wrap_lines(words[i:], max_line_chars, max_lines - 1)
        if rest is None:
            continue
        lines = (head, *rest)
        if best is None or max(map(len, lines)) < max(map(len, best)):
            best = lines
    return best


class CueBuilder:
    """Sans-I/O: turns commits into finished cues. add() and advance() return the cues they finished."""

    def __init__(self, config: CaptionConfig = CaptionConfig()) -> None:
        self.config = config
        self._words: list[_Word] = []  # the open cue
        self._last_end_s = 0.0  # end of the last word seen: word times never go backwards
        self._written_end_s = 0.0  # end of the last finished cue: the next one starts no earlier

    def add(self, commit: Commit) -> list[Cue]:
        done: list[Cue] = []
        words = self._split(commit)
        if words and self._words and not _SPACE.match(commit.text[:1]):
            # Commits split wherever the policy stopped, not only between words: text that does not start with a
            # space continues the previous word ("nice" + ", and" is "nice, and", never a cue starting with ",").
            glued, words = words[0], words[1:]
            last = self._words.pop()
            words[0:0] = self._glue(last, glued)  # re-added: it may not fit
        for word in words:
            done += self._add_word(word)
        return done

    def advance(self, stream_s: float) -> list[Cue]:
        """The stream has reached `stream_s` with no new words: close the open cue once that is a pause."""
        if self._words and stream_s - self._words[-1].end_s >= self.config.pause_s:
            return self._close()
        return []

    def finish(self) -> list[Cue]:
        return self._close()

    def _glue(self, last: _Word, piece: _Word) -> list[_Word]:
        """A word and the piece that continues it; cut again into line-sized parts when that outgrows a line (CJK
        text, which has no spaces, arrives in many pieces), with times by character count."""
        text, n = last.text + piece.text, self.config.max_line_chars
        if len(text) <= n:
            return [_Word(text, last.start_s, piece.end_s)]
        span = piece.end_s - last.start_s
        return [
            _Word(
                text[i : i + n],
                last.start_s + span * i / len(text),
                last.start_s + span * min(i + n, len(text)) / len(text),
            )
            for i in range(0, len(text), n)
        ]

    def _split(self, commit: Commit) -> list[_Word]:
        cfg = self.config
        tokens: list[str] = []
        for token in (t for t in _SPACES.split(commit.text) if t):
            # A "word" longer than a line (CJK text has no spaces) is cut into line-sized pieces.
            tokens += [token[i : i + cfg.max_line_chars] for i in range(0, len(token), cfg.max_line_chars)]
        if not tokens:
            return []
        start = max(float(commit.start_s), self._last_end_s)
        end = max(float(commit.end_s), start)
        total = sum(len(t) + 1 for t in tokens)
        words, pos = [], 0
        for token in tokens:
            w_start = start + (end - start) * pos / total
            pos += len(token) + 1
            words.append(_Word(token, w_start, start + (end - start) * pos / total))
        self._last_end_s = end
        return words

    def _add_word(self, word: _Word) -> list[Cue]:
        cfg = self.config
        done: list[Cue] = []
        if self._words:
            paused = word.start_s - self._words[-1].end_s >= cfg.pause_s
            if paused:
                done = self._close()
            elif not self._takes(word):
                done = self._close(self._clause_break())
                if self._words and not self._takes(word):  # what the break carried over is still too much
                    done += self._close()
        self._words.append(word)
        if _SENTENCE_END.search(word.text):
            done += self._close()
        return done

    def _takes(self, word: _Word) -> bool:
        """Whether the open cue can grow by `word`: not too long, and it still wraps into its lines."""
        cfg = self.config
        if word.end_s - self._words[0].start_s > cfg.max_duration_s:
            return False
        return wrap_lines([w.text for w in self._words] + [word.text], cfg.max_line_chars, cfg.max_lines) is not None

    def _clause_break(self) -> int:
        """How many open words to close when the cue is full: up to its last clause end, else before its last
        conjunction (subtitle convention: a line reads best when it breaks where a clause does), unless either
        would leave a stub in the first third."""
        first = len(self._words) // 3
        for i in range(len(self._words) - 1, first - 1, -1):
            if _CLAUSE_END.search(self._words[i].text):
                return i + 1
        for i in range(len(self._words) - 1, max(first, 1) - 1, -1):
            if self._words[i].text.lower() in _CONJUNCTIONS:
                return i
        return len(self._words)

    def _close(self, n_words: int | None = None) -> list[Cue]:
        """Finishes a cue from the first `n_words` open words (all by default); the rest stay open."""
        if not self._words:
            return []
        cfg = self.config
        words, self._words = self._words[:n_words], self._words[len(self._words) if n_words is None else n_words :]
        lines = wrap_lines([w.text for w in words], cfg.max_line_chars, cfg.max_lines)
        assert lines is not None, "the open cue always fits: _add_word closes it before it overflows"
        start = max(words[0].start_s, self._written_end_s)
        end = max(words[-1].end_s, start + cfg.min_duration_s)
        if self._words:  # the carried-over words must not start before this cue ends
            end = min(end, max(self._words[0].start_s, words[-1].end_s))
        self._written_end_s = end
        return [Cue(_round_ms(start), _round_ms(end), lines)]


def build_cues(commits: Iterable[Commit], config: CaptionConfig = CaptionConfig()) -> list[Cue]:
    builder = CueBuilder(config)
    cues = [cue for commit in commits for cue in builder.add(commit)]
    return cues + builder.finish()


def _timestamp(seconds: float, decimal: str) -> str:
    ms = max(0, math.floor(seconds * 1000 + 0.5))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def _vtt_text(line: str) -> str:
    # WebVTT cue text is markup: escape it, and "-->" would end the cue payload.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_cue(cue: Cue, index: int, fmt: CaptionFormat) -> str:
    """One cue as file text, ending in the blank line that separates cues; `index` counts from 1."""
    if fmt == "vtt":
        return (
            f"{index}\n{_timestamp(cue.start_s, '.')} --> {_timestamp(cue.end_s, '.')}\n"
            + "\n".join(_vtt_text(line) for line in cue.lines)
            + "\n\n"
        )
    # SRT has no escaping; "-->" inside text would confuse parsers, so it is softened to an arrow.
    return (
        f"{index}\n{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}\n"
        + "\n".join(line.replace("-->", "→") for line in cue.lines)
        + "\n\n"
    )


def format_header(fmt: CaptionFormat) -> str:
    return "WEBVTT\n\n" if fmt == "vtt" else ""


def format_captions(cues: Iterable[Cue], fmt: CaptionFormat) -> str:
    return format_header(fmt) + "".join(format_cue(c, i, fmt) for i, c in enumerate(cues, 1))


class CaptionWriter:
    """Writes one caption file incrementally: each finished cue is appended and flushed immediately."""

    def __init__(
        self, path: str | Path, fmt: CaptionFormat | None = None, config: CaptionConfig = CaptionConfig()
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt or caption_format(self.path)
        self.config = config
        self.cues_written = 0
        self._builder = CueBuilder(config)
        try:
            self._file: TextIO | None = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise ConfigError(f"cannot write captions to {self.path}: {e.strerror or e}") from e
        self._write(format_header(self.fmt))  # an empty caption file is already valid

    def add(self, commit: Commit) -> None:
        self._emit(self._builder.add(commit))

    def advance(self, stream_s: float) -> None:
        """Tell the writer how far the stream has got; a cue followed by a long enough silence is written."""
        self._emit(self._builder.advance(stream_s))

    def close(self) -> None:
        """Writes the last cue and closes the file; safe to call twice."""
        if self._file is None:
            return
        self._emit(self._builder.finish())
        self._file.close()
        self._file = None
        log.debug("%s: %d cues", self.path, self.cues_written)

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> CaptionWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _emit(self, cues: list[Cue]) -> None:
        for cue in cues:
            self.cues_written += 1
            self._write(format_cue(cue, self.cues_written, self.fmt))

    def _write(self, text: str) -> None:
        if self._file is None:
            raise ValueError(f"caption writer for {self.path} is closed")
        if text:
            self._file.write(text)
            # flush so a crash keeps every finished cue; fsync is left out: it costs a disk round trip per cue
            self._file.flush()


def write_captions(commits: Iterable[Commit], path: str | Path, config: CaptionConfig = CaptionConfig()) -> int:
    """Writes all commits to `path` (.vtt or .srt) and returns the number of cues."""
    with CaptionWriter(path, config=config) as writer:
        for commit in commits:
            writer.add(commit)
    return writer.cues_written


__all__ = [
    "CaptionConfig",
    "CaptionFormat",
    "CaptionWriter",
    "Cue",
    "CueBuilder",
    "build_cues",
    "caption_format",
    "format_captions",
    "format_cue",
    "wrap_lines",
    "write_captions",
]
