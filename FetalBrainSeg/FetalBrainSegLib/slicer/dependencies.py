"""What the engine needs beyond Slicer's own Python, and installing it on first use.

Reading stacks needs nibabel and pynrrd (small, pure Python). Segmenting needs one runtime:
ONNX Runtime (about 80 MB, CPU) is offered by default;
PyTorch only when the user wants a CUDA GPU, through the PyTorch extension's PyTorchUtils
when present (it picks the build matching the GPU), else pip. Slicer bundles numpy, vtk
and SimpleITK: those are never installed or upgraded here. Every outcome is a message,
never a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

LIGHT_RUNTIME = "onnxruntime"
GPU_RUNTIME = "torch"
INT8_RUNTIMES = ("onnxruntime", "openvino")  # the INT8 model runs in these only, never in PyTorch
# the INT8 model is built on first use from the shipped calibration (engine/int8_model.py), into the user's cache
INT8_BUILDER = ("onnx", "platformdirs")
# what pip is asked for: versions this release was tested with, below the next major release
READERS = ("nibabel", "nrrd")  # module names of the image libraries (nrrd is pynrrd)
PIP_REQUIREMENTS = {
    LIGHT_RUNTIME: "onnxruntime>=1.28,<2",
    "onnx": "onnx>=1.15,<2",
    "platformdirs": "platformdirs>=3,<5",
    GPU_RUNTIME: "torch>=2.0,<3",
    "nibabel": "nibabel>=5.0,<6",
    "nrrd": "pynrrd>=1.0,<2",
}
BUNDLED_WITH_SLICER = ("numpy", "vtk", "SimpleITK")


def missing_requirements(
    gpu: bool = False, find_spec: Callable = importlib.util.find_spec, precision: str = "fp32", training: bool = False
) -> list[str]:
    """The modules to install: image readers that are missing, and a runtime for this device and precision
    if none that serves is importable (learning from corrections, `training`, needs PyTorch)."""
    missing = [name for name in READERS if not find_spec(name)]
    if gpu or training:
        return missing + ([] if find_spec(GPU_RUNTIME) else [GPU_RUNTIME])
    if precision == "int8":
        runtime = [] if any(find_spec(name) for name in INT8_RUNTIMES) else [LIGHT_RUNTIME]
        return missing + runtime + [name for name in INT8_BUILDER if not find_spec(name)]
    return missing + ([] if (find_spec(LIGHT_RUNTIME) or find_spec(GPU_RUNTIME)) else [LIGHT_RUNTIME])


def ensure_dependencies(
    confirm: Callable[[str], bool],
    pip_install: Callable[[str], None],
    torch_utils_logic=None,
    report: Callable[[str], None] = print,
    find_spec: Callable = importlib.util.find_spec,
    gpu: bool = False,
    precision: str = "fp32",
    training: bool = False,
) -> bool:
    """True when a runtime for the chosen device and precision (or, `training`, PyTorch) is importable, asking
    before installing anything."""
    missing = missing_requirements(gpu, find_spec, precision, training)
    if not missing:
        return True
    names = ", ".join(PIP_REQUIREMENTS[name].split(">")[0] for name in missing)
    size = "several hundred megabytes to a few gigabytes" if GPU_RUNTIME in missing else "about 80 megabytes"
    task = "learn from your corrections" if training else f"segment{' on the GPU' if gpu else ''}"
    question = f"FetalBrainSeg needs {names} (not bundled with Slicer) to {task}. Install it now? It downloads {size}."
    if not confirm(question):
        report(
            f"{names} not installed: FetalBrainSeg cannot {task} until it is. "
            f"Click {'Improve from my corrections' if training else 'Segment'} again to be asked again."
        )
        return False
    try:
        for requirement in missing:
            if requirement == GPU_RUNTIME and torch_utils_logic is not None:
                if torch_utils_logic.installTorch(askConfirmation=False) is None:
                    raise RuntimeError("the PyTorch extension could not install PyTorch")
            else:
                pip_install(PIP_REQUIREMENTS[requirement])
    except Exception as exc:  # any installer failure becomes a message
        report(
            f"Installing {names} failed: {exc}. Check the network connection"
            + (", or install PyTorch with the PyTorch extension (Extensions Manager > PyTorch)" if gpu else "")
            + ", then restart Slicer."
        )
        return False
    importlib.invalidate_caches()
    still_missing = missing_requirements(gpu, find_spec, precision, training)
    if still_missing:
        report(f"{', '.join(still_missing)} still cannot be imported after installing; restart Slicer and retry.")
        return False
    return True
