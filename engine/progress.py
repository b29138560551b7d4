"""A minimal progress bar on stderr (no dependency), silent when stderr is not a terminal unless forced."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, total: float, unit: str = "", enabled: bool | None = None) -> None:
        self.label, self.total, self.unit = label, max(total, 1e-9), unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def update(self, done: float) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {done:.0f}/{self.total:.0f}{self.unit}")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """End the bar at 100 % (the work is done even if the last update was throttled away)."""
        if self._shown:
            self._last = 0.0
            self.update(self.total)
            sys.stderr.write("\n")
            sys.stderr.flush()
