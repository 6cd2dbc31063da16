"""Site models: weights adapted to one site's stacks from its users' corrections (training/adapt.py).

They live in the user's data folder (user_folders.py), one folder per name holding `<name>.onnx`, whose
metadata carries the base weights' record and a `site` record: the modality it learnt, the base weights,
the corrected stacks with their checksums, steps, minutes and the held-out score before and after. They
are never written into the repository or the installed extension. `--model NAME` (and the Slicer and
web model lists) resolve a name here; a site model moves to another machine as one file (export/import).

A site model learnt one modality. `modality_of` tells a stack's from its in-plane pixel size: every EPI
stack of the shared data has pixels of 2 mm or more, every T2W one of 1.2 mm or less; the engine segments
a stack of the other modality with the base weights (inference.Segmenter), unless told not to.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..user_folders import data_folder

EPI_PIXEL_MM = 1.6  # in-plane pixels this large or larger: an EPI stack (T2W <= 1.2 mm, EPI >= 2 mm here)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BUILT_IN = ("rfbsnet",)  # names that are not site models


def modality_of(pixel_mm: float) -> str:
    return "EPI" if pixel_mm >= EPI_PIXEL_MM else "T2W"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or "") or name.lower() in BUILT_IN:
        raise ValueError(
            f"a site model's name is 1-64 letters, digits, '.', '_' or '-', not a built-in model: {name!r}"
        )
    return name


def check_new_name(name: str) -> str:
    """A valid name that no site model has yet (a site model is never replaced)."""
    if site_model_path(name).exists():
        raise FileExistsError(f"a site model named {name!r} exists ({site_model_path(name)}); choose another name")
    return name


def default_site_name() -> str:
    """A new site model's name when the user gives none: the date and minute it was made."""
    return time.strftime("site-%Y%m%d-%H%M")


def sites_folder() -> Path:
    return data_folder() / "sites"


def site_model_path(name: str) -> Path:
    return sites_folder() / check_name(name) / f"{name}.onnx"


@dataclass(frozen=True)
class SiteModel:
    name: str
    path: Path
    site: dict  # the `site` record: modality, base, stacks, steps, minutes, held_out_before, held_out_after


def site_record(metadata: dict) -> dict | None:
    return metadata.get("training", {}).get("site")


def list_site_models() -> list[SiteModel]:
    from .weights_record import weights_record

    models = []
    for path in sorted(sites_folder().glob("*/*.onnx")):
        site = site_record(weights_record(path))
        if site is not None and path.stem == path.parent.name:
            models.append(SiteModel(path.stem, path, site))
    return models


def resolve_model(name: str) -> Path:
    """The weights file of a site model by name, with the names there are when it is not one."""
    path = site_model_path(name)
    if not path.is_file():
        known = ", ".join(m.name for m in list_site_models()) or "none yet (fetalbrainseg adapt makes one)"
        raise ValueError(f"no site model named {name!r}; site models: {known}")
    return path


def export_site_model(name: str, destination: Path) -> Path:
    """Copy a site model to one file (its ONNX model, provenance inside) for another machine."""
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose another file (nothing is overwritten)")
    with atomic_path(destination) as tmp:
        shutil.copyfile(resolve_model(name), tmp)
    return destination


def import_site_model(source: Path, name: str | None = None) -> SiteModel:
    """Add an exported site model under `name` (default: the name it was made under); never replaces one."""
    from .weights_record import weights_record

    source = Path(source)
    site = site_record(weights_record(source)) if source.is_file() else None
    if site is None:
        raise ValueError(f"{source}: not a FetalBrainSeg site model (no site record)")
    name = check_name(name or site["name"])
    target = site_model_path(name)
    if target.exists():
        raise FileExistsError(f"a site model named {name!r} exists; import under another name")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return SiteModel(name, target, site)
