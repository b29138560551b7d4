"""Live captions in a terminal: committed text in normal weight, the partial tail dimmed and rewritten in place.

On a TTY the current caption line is redrawn with `\\r` + erase-line on every event and broken into a new
line at sentence ends (or when it would wrap, since `\\r` cannot climb back over a wrapped line). When the
output is not a TTY (a pipe, a file) only committed text is written, as plain lines at sentence ends: no
escape codes, and nothing that a later event takes back.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from engine.text import text_ends_sentence

DIM, RESET, ERASE_LINE = "\x1b[2m", "\x1b[0m", "\x1b[2K"


class LiveCaptions:
    """Render a stream's Commit/Partial texts; `dragoman stream` and `dragoman mic` share it."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, show_lag: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout  # looked up now: tests swap sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.show_lag = show_lag
        self._line = ""  # committed text of the current caption line
        self._partial = ""
        self._lag_s: float | None = None

    def commit(self, text: str) -> None:
        """Append final text (never taken back)."""
        if not self._line:
            text = text.lstrip()
        self._line += text
        if text_ends_sentence(self._line) or (self.tty and len(self._line) > self._width() - 10):
            self._partial = ""
            self._end_line()
        elif self.tty:
            self._redraw()

    def partial(self, text: str) -> None:
        """Replace the tentative tail ("" clears it)."""
        self._partial = text
        if self.tty:
            self._redraw()

    def lag(self, lag_s: float) -> None:
        """Update the lag indicator; on a TTY it is redrawn when its shown value changes (also during silence)."""
        changed = self._lag_s is None or round(self._lag_s, 1) != round(lag_s, 1)
        self._lag_s = lag_s
        if changed and self.tty and self.show_lag:
            self._redraw()

    def close(self) -> None:
        """Write out what is left (the stream ended)."""
        self._partial = ""
        if self._line:
            self._end_line()
        elif self.tty:
            self.stream.write("\r" + ERASE_LINE)
        self.stream.flush()

    # -- drawing -------------------------------------------------------------------------------------------
    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        # a pseudo-terminal nobody sized reports 0 columns: fall back rather than break after every word
        return columns if columns >= 20 else 100

    def _redraw(self) -> None:
        width = self._width() - 1
        tail = self._partial if self._line else self._partial.lstrip()
        lag = f"  [lag {self._lag_s:.1f} s]" if self.show_lag and self._lag_s is not None else ""
        room = max(0, width - len(self._line) - len(lag))
        if len(tail) > room:  # keep the newest words of the tentative tail visible
            tail = "…" + tail[len(tail) - room + 1 :] if room > 1 else ""
        line = self._line[-width:]
        self.stream.write("\r" + ERASE_LINE + line + (DIM + tail + lag + RESET if tail or lag else ""))
        self.stream.flush()

    def _end_line(self) -> None:
        text = self._line.strip()
        self._line = ""
        if self.tty:
            self.stream.write("\r" + ERASE_LINE + text + "\n")
        elif text:
            self.stream.write(text + "\n")
        self.stream.flush()
