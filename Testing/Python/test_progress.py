"""The command line's progress bar (progress.py)."""

import io
import time

from FetalBrainSegLib.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_rate_is_measured_from_the_first_update_not_from_the_bars_creation():
    """A bar made when the first chunk arrives used to divide that chunk by microseconds (8/44 766577.2
    slices/s); the first update now shows no rate, and later ones the rate since it."""
    stream = io.StringIO()
    bar = ProgressBar(44, "stack", "slices", stream=stream)
    bar.update(8)
    first = stream.getvalue().splitlines()[-1]
    assert "8/44" in first and "slices/s" not in first
    time.sleep(0.2)
    bar.update(36)
    last = stream.getvalue().splitlines()[-1]
    rate = float(last.split("44/44 ")[1].split(" slices/s")[0])
    assert 0 < rate <= 36 / 0.2  # 36 slices in at least 0.2 s, not 44 in none


def test_a_shorter_redraw_on_a_terminal_blanks_what_the_longer_one_left():
    stream = Terminal()
    bar = ProgressBar(40, "stack", "slices", stream=stream)
    bar.update(1, "a long note about this slice")
    bar.update(39)
    first, last = stream.getvalue().split("\r")[1:]
    assert "note" in first and "note" not in last and last.endswith("\n")
    assert len(last.rstrip("\n")) == len(first)  # padded with blanks over the longer line
