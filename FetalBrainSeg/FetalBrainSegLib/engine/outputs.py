"""Where masks go, and the rules that keep users' files safe: never overwrite an input, nor an
existing output unless asked, and never let two inputs write the same output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .volume_io import NRRD_SUFFIXES, strip_suffix, volume_suffix

MASK_TAG = "_brainmask"


def is_mask_output(path: str | os.PathLike) -> bool:
    return strip_suffix(path).endswith(MASK_TAG)


def collect_inputs(arguments: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the volume files directly inside given folders (skipping our own masks)."""
    found: dict[Path, Path] = {}  # one entry per file, however it was spelled (./x, its absolute path, a link)
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and volume_suffix(p)
                and not is_mask_output(p)
                and not (volume_suffix(p) == ".img" and p.with_suffix(".hdr").is_file())
            )  # a pair once
        else:
            paths = [path]
        for p in paths:
            found.setdefault(p.resolve(), p)
    return list(found.values())


def mask_path_for(image: Path, out_dir: Path | None) -> Path:
    suffix = ".nrrd" if volume_suffix(image) in NRRD_SUFFIXES else ".nii.gz"
    return (out_dir or image.parent) / f"{strip_suffix(image)}{MASK_TAG}{suffix}"


def output_problem(output: Path, input_paths: set[Path], claimed: set[Path], overwrite: bool) -> str | None:
    """Why this output must not be written, or None. `input_paths` and `claimed` hold resolved paths
    (resolved once by the caller: a cohort has thousands)."""
    resolved = output.resolve()
    if resolved in input_paths:
        return f"{output} is one of the inputs; it is never overwritten"
    if resolved in claimed:
        return f"{output} would also be written for another input; use separate output folders"
    if output.exists() and not overwrite:
        return f"{output} already exists; pass --overwrite to replace it"
    return None


def output_folder_problem(folder: Path) -> str | None:
    """Why masks cannot be written in `folder` (created when missing), or None: checked before any work."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the output folder {folder} ({exc.strerror})"
    try:
        handle, probe = tempfile.mkstemp(prefix=".fetalbrainseg-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in the output folder {folder} ({exc.strerror})"
    return None
