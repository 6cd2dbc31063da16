"""Where a figure came from: the command, the code's git revision and the machine."""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def git_revision() -> str:
    """`git describe` of the code, or FETALBRAINSEG_REVISION where set: a copy of the tree sent to
    another machine (a GPU machine's snapshot has a git history of its own) names its revision there."""
    if os.environ.get("FETALBRAINSEG_REVISION"):
        return os.environ["FETALBRAINSEG_REVISION"]
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def machine() -> str:
    """CPU, threads and GPU, and the software: PyTorch's view where it is installed, else the OS's
    (the light install, numpy and ONNX Runtime only, writes results too)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    if importlib.util.find_spec("torch") is None:
        return f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, no torch, {system}"
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} threads{gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {system}"
    )


def command_line() -> str:
    """The `fetalbrainseg` command, the `python -m experiments.NAME` one, or another script, that is running."""
    script = Path(sys.argv[0])
    if script.suffix != ".py" or script.name == "__main__.py":
        program = "fetalbrainseg"
    elif script.parent.name == "experiments":
        program = f"python -m experiments.{script.stem}"
    else:
        program = f"python {sys.argv[0]}"
    return " ".join([program, *(shlex.quote(a) for a in sys.argv[1:])])


@functools.cache  # read once per run, before it rewrites committed results (which would read as "-dirty")
def _provenance_at_start() -> tuple:
    return (("command", command_line()), ("git_revision", git_revision()), ("machine", machine()))


def provenance() -> dict:
    return dict(_provenance_at_start())


def provenance_markdown() -> str:
    """The closing lines of every results file: command, revision, machine."""
    return "\n".join(f"- {key}: `{value}`" for key, value in provenance().items()) + "\n"


def write_results(out_dir: Path, name: str, rows: list[dict], markdown_lines: list[str]) -> Path:
    """`name`.csv from the rows and `name`.md from the lines, closed by where they came from."""
    footer = provenance_markdown()  # first: the revision is read once, before any results file changes
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(markdown_lines) + "\n\n" + footer)
    return path
