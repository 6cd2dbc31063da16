"""The test suite's time per file, before and after a change, from pytest's `--durations=0` reports.

    python -m pytest --durations=0 -v > after.txt     # the README's test command, every duration listed
    python -m experiments.suite_times before.txt after.txt [-o docs/results/test_suite_time.md]

Each report's setup, call and teardown times are summed per test file; the wall time is pytest's own
closing line. With `-v` under parallel workers (pytest-xdist), each worker's files, in the order it ran them,
and their sum follow the table: how evenly the work was shared. Timings of one machine and one moment: compare
runs made on the same machine.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

DURATION = re.compile(r"^\s*([\d.]+)s (?:setup|call|teardown)\s+(\S+?\.py)::")
WORKER_RESULT = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] [A-Z]+ (\S+?\.py)::")
WALL = re.compile(r"in ([\d.]+)s(?: \(\d+:\d+:\d+\))?\s*=*\s*$")


def per_file(report: str) -> tuple[dict[str, float], float]:
    """Seconds per test file, and the whole run's wall time."""
    totals: dict[str, float] = defaultdict(float)
    wall = 0.0
    for line in report.splitlines():
        if match := DURATION.match(line):
            totals[Path(match.group(2)).name] += float(match.group(1))
        elif (match := WALL.search(line)) and ("passed" in line or "failed" in line):
            wall = float(match.group(1))
    return dict(totals), wall


def per_worker(report: str) -> dict[str, list[str]]:
    """Each pytest-xdist worker's test files in the order it ran them (from `-v` output)."""
    files: dict[str, list[str]] = defaultdict(list)
    for line in report.splitlines():
        if (match := WORKER_RESULT.match(line)) and Path(match.group(2)).name not in files[match.group(1)]:
            files[match.group(1)].append(Path(match.group(2)).name)
    return dict(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="pytest --durations=0 output before the change")
    parser.add_argument("after", type=Path, help="the same after it")
    parser.add_argument("-o", "--out", type=Path, default=None, help="a markdown file (default: print only)")
    args = parser.parse_args()
    (before, wall_before), (after, wall_after) = (per_file(p.read_text()) for p in (args.before, args.after))
    lines = ["| test file | before (s) | after (s) |", "|---|---|---|"]
    for name in sorted(set(before) | set(after), key=lambda n: -max(before.get(n, 0), after.get(n, 0))):
        lines.append(f"| {name} | {before.get(name, 0):.0f} | {after.get(name, 0):.0f} |")
    # with parallel workers (pytest-xdist) the files' sum exceeds the wall time: it is each worker's time
    lines.append(f"| sum of the files | {sum(before.values()):.0f} | {sum(after.values()):.0f} |")
    lines.append(f"| **whole run (wall)** | **{wall_before:.0f}** | **{wall_after:.0f}** |")
    for label, path, seconds in (("before", args.before, before), ("after", args.after, after)):
        for worker, files in sorted(per_worker(path.read_text()).items()):
            work = sum(seconds.get(name, 0) for name in files)
            lines.append(
                f"\n{label}, {worker}: {work:.0f} s: " + ", ".join(f"{n} {seconds.get(n, 0):.0f}" for n in files)
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
