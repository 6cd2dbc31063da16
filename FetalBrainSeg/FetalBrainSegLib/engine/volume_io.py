"""Read and write NIfTI (nibabel: NIfTI-1 and -2, .nii, .nii.gz, .hdr/.img pairs) and NRRD (pynrrd: every
encoding, attached or detached headers) volumes, as the field's own tools read them.

A `Volume` keeps its array in voxel order (i, j, k) and the voxel-to-RAS affine (nibabel's
convention). A mask is written with its source's own header, only the voxel type, scaling and
display range changed, so it has the input's geometry field for field: NIfTI xform codes,
quaternions, sform, pixdim, units and byte order; every NRRD geometry field. A file that cannot
be used raises VolumeError with a one-line reason naming it, so a batch goes on with the others.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path


class VolumeError(ValueError):
    """An input that cannot be used as a stack; the message says why in one line."""


@dataclass
class Volume:
    data: np.ndarray
    affine: np.ndarray  # 4x4 voxel (i, j, k) -> RAS millimetres
    format: str = "nifti"  # "nifti" or "nrrd": the format a derived mask is written in
    header: object = field(default=None, repr=False)  # the source's nibabel header or pynrrd field dict

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def padded(self, pad: list[tuple[int, int]]) -> Volume:
        """The same voxels inside a larger grid of zeros (`pad`: voxels before and after, per axis),
        each where it was in the scanner."""
        affine = self.affine.copy()
        affine[:3, 3] -= affine[:3, :3] @ np.array([before for before, _ in pad], dtype=float)
        return Volume(np.pad(self.data, pad), affine)


# ---------------------------------------------------------------- paths

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")  # .hdr/.img: a NIfTI (or ANALYZE) pair, either file
NRRD_SUFFIXES = (".nrrd", ".nhdr")
READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, zlib.error)


def volume_suffix(path: str | os.PathLike) -> str | None:
    name = str(path).lower()
    for suffix in NIFTI_SUFFIXES + NRRD_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def strip_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def read_volume(path: str | os.PathLike) -> Volume:
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in NRRD_SUFFIXES:
        return _read_nrrd(path)
    raise VolumeError(f"{path.name}: not a NIfTI (.nii, .nii.gz, .hdr/.img) or NRRD (.nrrd, .nhdr) file")


def write_mask(source: Volume, mask: np.ndarray, path: str | os.PathLike, description: str = "") -> None:
    """Write a uint8 mask on the source's grid with the source's header, in the source's format, atomically;
    `description` (how it was made, such as its margin) goes in the header: NIfTI descrip (80 bytes), NRRD
    content."""
    if mask.shape != source.data.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the source's {source.data.shape}")
    mask = np.asarray(mask, dtype=np.uint8)
    if source.format == "nrrd":
        _write_nrrd(
            mask, {**_mask_fields(source.header), **({"content": description} if description else {})}, Path(path)
        )
    else:
        image = _nifti_mask_image(source.header, mask)
        if description:
            image.header["descrip"] = description.encode()[:80]
        _write_nifti(image, Path(path))


def write_volume(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, description: str = "") -> None:
    """Write a new volume with this affine (NIfTI with sform and qform, or NRRD in LPS space); `description` as
    write_mask's."""
    path = Path(path)
    data, affine = np.asarray(data), np.asarray(affine, dtype=float)
    if volume_suffix(path) in NRRD_SUFFIXES:
        lps = _LPS_FLIP @ affine[:3, :]
        fields = {
            "space": "left-posterior-superior",
            "space directions": lps[:, :3].T,
            "space origin": lps[:, 3],
            "kinds": ["domain"] * 3,
            **({"content": description} if description else {}),
        }
        _write_nrrd(data, fields, path)
    else:
        import nibabel

        image = nibabel.Nifti1Image(data, affine)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm", "sec")
        if description:
            image.header["descrip"] = description.encode()[:80]
        _write_nifti(image, path)


# ---------------------------------------------------------------- NIfTI (nibabel)


def _read_nifti(path: Path) -> Volume:
    import nibabel

    try:
        image = nibabel.load(str(path))
        data = np.asanyarray(image.dataobj)  # scaled by scl_slope/inter, unscaled when NaN or 0 (the standard)
    except nibabel.filebasedimages.ImageFileError as exc:
        if _damaged_gzip(path):
            raise VolumeError(f"{path.name}: corrupt gzip data (the compressed stream is damaged)") from exc
        raise VolumeError(f"{path.name}: not a NIfTI file ({_first_line(exc)})") from exc
    except (zlib.error, EOFError) as exc:
        raise VolumeError(f"{path.name}: corrupt gzip data ({_first_line(exc)})") from exc
    except READ_ERRORS as exc:
        raise VolumeError(f"{path.name}: truncated or unreadable NIfTI file ({_first_line(exc)})") from exc
    return Volume(np.array(data), np.asarray(image.affine, dtype=float), "nifti", image.header)


def _nifti_mask_image(source_header, mask: np.ndarray):
    """The mask as an image with the source's header: type uint8, no scaling, no display range."""
    import nibabel

    two = isinstance(source_header, nibabel.Nifti2Header)
    kind = (nibabel.Nifti2Header, nibabel.Nifti2Image) if two else (nibabel.Nifti1Header, nibabel.Nifti1Image)
    # the same header class keeps its byte order; a .hdr/.img pair's or ANALYZE's header becomes single-file
    header = source_header.copy() if type(source_header) is kind[0] else kind[0].from_header(source_header)
    header.set_data_dtype(np.uint8)
    header.set_data_shape(mask.shape)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = header["cal_max"] = 0
    image = kind[1](mask, None, header)  # affine None: the header's qform and sform stay as they are
    image.update_header()
    return image


def _write_nifti(image, path: Path) -> None:
    payload = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


# ---------------------------------------------------------------- NRRD (pynrrd)

_LPS_FLIP = np.diag([-1.0, -1.0, 1.0])
_SPACES = {
    "right-anterior-superior": np.eye(3),
    "ras": np.eye(3),
    "left-posterior-superior": _LPS_FLIP,
    "lps": _LPS_FLIP,
}
# per-axis and space fields a mask keeps from its source: its whole geometry and what the axes are
_GEOMETRY_FIELDS = (
    "space",
    "space dimension",
    "space directions",
    "space origin",
    "space units",
    "spacings",
    "thicknesses",
    "axis mins",
    "axis maxs",
    "centerings",
    "kinds",
    "labels",
    "units",
    "measurement frame",
)


def _read_nrrd(path: Path) -> Volume:
    import nrrd

    try:
        data, fields = nrrd.read(str(path))
    except nrrd.NRRDError as exc:
        reason = _first_line(exc)
        raise VolumeError(
            f"{path.name}: not a NRRD file ({reason})"
            if "magic" in reason.lower()
            else f"{path.name}: unreadable NRRD header ({reason})"
        ) from exc
    except (zlib.error, EOFError) as exc:
        raise VolumeError(f"{path.name}: corrupt compressed data ({_first_line(exc)})") from exc
    except READ_ERRORS as exc:
        raise VolumeError(f"{path.name}: truncated or unreadable NRRD file ({_first_line(exc)})") from exc
    return Volume(np.array(data), _nrrd_affine(fields, data.ndim, path.name), "nrrd", fields)


def _nrrd_affine(fields: dict, ndim: int, name: str) -> np.ndarray:
    """Voxel -> RAS. Without a `space` field (`space dimension` only) the space is LPS, as ITK reads it."""
    affine = np.eye(4)
    directions = fields.get("space directions")
    if directions is not None:
        directions = np.asarray(directions, dtype=float)
        spatial = [i for i, row in enumerate(directions) if np.all(np.isfinite(row))]
        if len(spatial) != 3 or spatial != [0, 1, 2] or directions.shape[1] != 3:
            raise VolumeError(f"{name}: has {ndim} axes ({len(spatial)} spatial); a stack must be a 3D volume")
        space = _SPACES.get(str(fields.get("space", "left-posterior-superior")).lower())
        if space is None:
            raise VolumeError(f"{name}: NRRD space {fields['space']!r} is not supported")
        affine[:3, :3] = space @ directions[:3].T
        affine[:3, 3] = space @ np.asarray(fields.get("space origin", np.zeros(3)), dtype=float)
    elif "spacings" in fields:
        spacings = np.asarray(fields["spacings"], dtype=float)[:3]
        affine[:3, :3] = np.diag(np.where(np.isfinite(spacings), spacings, 1.0))
    return affine


def _mask_fields(source_fields: dict) -> dict:
    return {key: value for key, value in (source_fields or {}).items() if key in _GEOMETRY_FIELDS}


def _write_nrrd(data: np.ndarray, fields: dict, path: Path) -> None:
    import nrrd

    header = {**fields, "encoding": "gzip", "endian": "little"}
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        nrrd.write(
            handle,
            np.asarray(data).astype(np.asarray(data).dtype.newbyteorder("<")),
            header,
            compression_level=6,
            index_order="F",
        )


def _damaged_gzip(path: Path) -> bool:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return False
    try:
        gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return True
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]
