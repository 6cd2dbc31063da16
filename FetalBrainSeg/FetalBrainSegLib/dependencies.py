"""What the engine needs beyond Slicer's own Python, and installing it on first use.

Slicer bundles numpy, vtk and SimpleITK: those are never installed or upgraded here.
PyTorch comes through the PyTorch extension's PyTorchUtils when present (it picks the
build that matches the machine's GPU), else pip. Every outcome is a message, never a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

# import name -> pip requirement; only what Slicer does not bundle
REQUIREMENTS = {"torch": "torch"}
BUNDLED_WITH_SLICER = ("numpy", "vtk", "SimpleITK")


def missing_requirements(find_spec: Callable = importlib.util.find_spec) -> list[str]:
    return [requirement for name, requirement in REQUIREMENTS.items() if find_spec(name) is None]


def ensure_dependencies(confirm: Callable[[str], bool], pip_install: Callable[[str], None],
                        torch_utils_logic=None, report: Callable[[str], None] = print,
                        find_spec: Callable = importlib.util.find_spec) -> bool:
    """True when everything is importable, asking the user before installing anything."""
    missing = missing_requirements(find_spec)
    if not missing:
        return True
    names = ", ".join(missing)
    question = (f"FetalBrainSeg needs {names} (not bundled with Slicer). Install it now? "
                "This downloads several hundred megabytes and may take a few minutes.")
    if not confirm(question):
        report(f"{names} not installed: FetalBrainSeg cannot segment until it is. "
               "Click Segment again to be asked again, or install the PyTorch extension.")
        return False
    try:
        for requirement in missing:
            if requirement == "torch" and torch_utils_logic is not None:
                if torch_utils_logic.installTorch(askConfirmation=False) is None:
                    raise RuntimeError("the PyTorch extension could not install PyTorch")
            else:
                pip_install(requirement)
    except Exception as exc:  # any installer failure becomes a message
        report(f"Installing {names} failed: {exc}. Check the network connection, or install PyTorch "
               "with the PyTorch extension (Extensions Manager > PyTorch) and restart Slicer.")
        return False
    importlib.invalidate_caches()
    still_missing = missing_requirements(find_spec)
    if still_missing:
        report(f"{', '.join(still_missing)} still cannot be imported after installing; restart Slicer and retry.")
        return False
    return True
