"""Finding the module's resources and weights in both layouts it runs from:
an installed extension (<module dir>/Resources/...) and a source checkout (<repo>/Resources, <repo>/weights)."""

from __future__ import annotations

from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent  # holds FetalBrainSeg.py and FetalBrainSegLib/


def resource_path(relative: str) -> Path:
    for base in (MODULE_DIR / "Resources", MODULE_DIR.parent / "Resources"):
        if (base / relative).exists():
            return base / relative
    raise FileNotFoundError(f"FetalBrainSeg resource {relative} not found beside {MODULE_DIR}")


def weights_folders() -> list[Path]:
    return [MODULE_DIR / "Resources" / "weights", MODULE_DIR.parent / "weights"]
