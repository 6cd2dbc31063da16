"""What Slicer's Reload and Test (`FetalBrainSegTest`) needs before it runs, on a stock Slicer.

It installs the runtime and image readers the way the module does on first use (without
asking: the person who clicked Test asked for it), and finds its stack: $FETALBRAINSEG_TEST_STACK,
else the public CC0 sample (cached, the project's shared copy, or downloaded). Whatever is
missing, offline or not, comes back as one plain sentence for the test to fail with.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

from ..samples import DownloadError, fetch_sample
from .dependencies import PIP_REQUIREMENTS, ensure_dependencies, missing_requirements

STACK_ENV = "FETALBRAINSEG_TEST_STACK"


class SelfTestUnavailable(RuntimeError):
    """Why the self-test cannot run here, in one sentence."""


def prepare_self_test(
    pip_install: Callable[[str], None],
    find_spec: Callable = importlib.util.find_spec,
    fetch: Callable[[], Path] = fetch_sample,
) -> Path:
    """Install what is missing and return the stack to test on, or raise SelfTestUnavailable saying what is missing."""
    reports: list[str] = []
    if not ensure_dependencies(lambda question: True, pip_install, report=reports.append, find_spec=find_spec):
        missing = ", ".join(PIP_REQUIREMENTS[name].split(">")[0] for name in missing_requirements(find_spec=find_spec))
        raise SelfTestUnavailable(
            f"FetalBrainSegTest needs {missing}, which Slicer does not bundle, and installing failed "
            f"({' '.join(reports)}). Connect to the network, or install them with pip_install in Slicer's "
            "Python console, then run the test again."
        )
    if os.environ.get(STACK_ENV):
        stack = Path(os.environ[STACK_ENV])
        if not stack.is_file():
            raise SelfTestUnavailable(f"{STACK_ENV} names {stack}, which is not a file")
        return stack
    try:
        return fetch()
    except DownloadError as exc:
        raise SelfTestUnavailable(
            f"FetalBrainSegTest needs a stack and none is here: {exc}. Offline, set {STACK_ENV} to a NIfTI or "
            "NRRD stack and run the test again."
        ) from None
