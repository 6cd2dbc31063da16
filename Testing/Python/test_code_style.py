"""The tree stays clean under the linter and formatter configured in pyproject.toml (ruff, 120 columns)."""

import subprocess
import sys

from conftest import REPO_ROOT


def test_ruff_finds_nothing_to_fix_and_nothing_to_reformat():
    for command in (["check", "--no-fix", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
