"""`fetalbrainseg serve` started as a user starts it, and Debian's Chromium to look at it: shared by the
browser tests and experiments/web_app_screenshot.py."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(stacks: list[Path], out_dir: Path, *options: str, log_path: Path, timeout_s: float = 120):
    """Yields (url as printed, with its token if any; the process); stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "FetalBrainSegLib", "serve", *map(str, stacks), "-o", str(out_dir)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--device", "cpu", *options], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                printed = re.search(r"web app: (http://\S+)", log_path.read_text())
                try:
                    if printed:
                        urllib.request.urlopen(printed.group(1), timeout=2)
                        break
                except urllib.error.HTTPError:
                    break  # it answers (a refusal is for the test to judge)
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield printed.group(1), process
        finally:
            process.terminate()
            process.wait(timeout=30)


def launch_chromium(playwright):
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"the browser tests need Debian's chromium at {CHROMIUM} (.ci/run installs it)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
