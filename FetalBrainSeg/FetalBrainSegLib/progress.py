"""A dependency-free progress bar for the command line (redraws on a terminal, sparse lines in logs).

Our own rather than tqdm or rich: the light install (numpy, ONNX Runtime) and Slicer's Python get no
extra package for a line of text. The rate is measured from the first update on, not from the bar's
creation: a caller that makes its bar when the first chunk arrives would otherwise divide that
chunk's slices by microseconds.
"""

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
        self._first: tuple[int, float] | None = None  # (done, time) at the first update: the rate's origin
        self._last_decile = -1
        self._drawn = 0  # length of the line on screen, to be blanked out by a shorter redraw

    @property
    def rate(self) -> float | None:
        """Units per second after the first update; None until a second update has come."""
        if self._first is None or self.done == self._first[0]:
            return None
        elapsed = time.perf_counter() - self._first[1]
        return (self.done - self._first[0]) / elapsed if elapsed > 0 else None

    def update(self, count: int = 1, note: str = "") -> None:
        self.done = min(self.done + count, self.total)
        if self._first is None:  # the rate counts from here: what came before took unknown time
            self._first = (self.done, time.perf_counter())
        if not self.enabled:
            return
        decile = 10 * self.done // self.total
        if not self.interactive and decile == self._last_decile and self.done < self.total:
            return
        self._last_decile = decile
        width = 24
        filled = width * self.done // self.total
        rate = self.rate
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}" + (
            f" {rate:.1f} {self.unit}/s" if rate is not None else ""
        )
        line += f" {note}" if note else ""
        if self.interactive:
            self.stream.write("\r" + line.ljust(self._drawn))
            self._drawn = len(line)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
