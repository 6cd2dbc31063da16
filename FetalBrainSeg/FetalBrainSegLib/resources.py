"""Finding the module's resources and weights in both layouts it runs from:
an installed extension (<module dir>/Resources/...) and a source checkout (<repo>/Resources, <repo>/weights)."""

from __future__ import annotations

import os
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent  # holds FetalBrainSeg.py and FetalBrainSegLib/
WEIGHTS_DIR_ENV = "FETALBRAINSEG_WEIGHTS_DIR"
DEFAULT_WEIGHTS_NAME = "rfbsnet_fetal_brain.pt"


def resource_path(relative: str) -> Path:
    for base in (MODULE_DIR / "Resources", MODULE_DIR.parent / "Resources"):
        if (base / relative).exists():
            return base / relative
    raise FileNotFoundError(f"FetalBrainSeg resource {relative} not found beside {MODULE_DIR}")


def weights_folders() -> list[Path]:
    return [MODULE_DIR / "Resources" / "weights", MODULE_DIR.parent / "weights"]


def default_weights_path(model: str = "rfbsnet") -> Path:
    """The shipped weights of `model`: in $FETALBRAINSEG_WEIGHTS_DIR, else the installed extension's or the
    source tree's weights folder (rfbsnet ships; other models are trained by the user)."""
    name = DEFAULT_WEIGHTS_NAME.replace("rfbsnet", model.lower())
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]) / name
    folders = weights_folders()
    for folder in folders:  # the shipped model is its ONNX file; the .pt, where there is one, is a training run's
        if (folder / name).is_file() or (folder / name).with_suffix(".onnx").is_file():
            return folder / name
    return folders[-1] / name


def shared_manifest_path() -> Path:
    """The project's shared data set beside a source checkout (../shared/data/fetal-mri/manifest.csv), which
    the measurement scripts read wherever they are run from."""
    return MODULE_DIR.parent.parent / "shared" / "data" / "fetal-mri" / "manifest.csv"
