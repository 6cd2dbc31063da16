"""A dependency-free progress bar for the command line (redraws on a terminal, sparse lines in logs)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str, unit: str = "it", stream=None, enabled: bool = True):
        self.total, self.label, self.unit = max(int(total), 1), label, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0
        self.start = time.perf_counter()
        self._last_decile = -1

    def update(self, count: int = 1, note: str = "") -> None:
        self.done = min(self.done + count, self.total)
        if not self.enabled:
            return
        decile = 10 * self.done // self.total
        if not self.interactive and decile == self._last_decile and self.done < self.total:
            return
        self._last_decile = decile
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        width = 24
        filled = width * self.done // self.total
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{rate:.1f} {self.unit}/s {note}"
        )
        self.stream.write(("\r" + line) if self.interactive else line + "\n")
        if self.interactive and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
