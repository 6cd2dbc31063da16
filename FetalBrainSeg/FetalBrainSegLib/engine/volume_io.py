"""Read and write NIfTI-1/2 (.nii, .nii.gz) and NRRD (.nrrd, .nhdr-less attached) volumes with numpy alone.

Slicer bundles neither nibabel nor pynrrd, and the engine must install light, so the
formats are handled here. A `Volume` keeps its array in voxel order (i, j, k) and the
voxel-to-RAS affine (nibabel's convention). Masks are written by copying the source
file's own header and changing only the voxel type, so the output has the input's
geometry bit for bit.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
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
    header: dict = field(default_factory=dict, repr=False)  # source header, for faithful writing

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


# ---------------------------------------------------------------- paths

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd",)


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


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise VolumeError(f"{path.name}: corrupt gzip data ({exc})") from exc
    return raw


def _write_atomic(path: Path, payload: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def read_volume(path: str | os.PathLike) -> Volume:
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in NRRD_SUFFIXES:
        return _read_nrrd(path)
    raise VolumeError(f"{path.name}: not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file")


def write_mask(source: Volume, mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 mask on the source's grid, in the source's format, atomically."""
    if mask.shape != source.data.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the source's {source.data.shape}")
    mask = np.asarray(mask, dtype=np.uint8)
    if source.format == "nrrd":
        payload = _nrrd_bytes(mask, source.header)
    else:
        payload = _nifti_bytes(mask, source.header["raw"], str(path).lower().endswith(".gz"))
    _write_atomic(Path(path), payload)


def write_volume(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> None:
    """Write a new volume with this affine (NIfTI with sform and qform, or NRRD in LPS space)."""
    path = Path(path)
    volume = Volume(np.asarray(data), np.asarray(affine, dtype=float))
    if volume_suffix(path) in NRRD_SUFFIXES:
        _write_atomic(path, _nrrd_bytes(volume.data, _nrrd_header_from_affine(volume.affine)))
    else:
        raw = _nifti_header_from_affine(volume.data.shape, volume.affine)
        _write_atomic(path, _nifti_bytes(volume.data, raw, path.name.lower().endswith(".gz")))


# ---------------------------------------------------------------- NIfTI

_NIFTI_DTYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
_NIFTI_CODES = {np.dtype(v): k for k, v in _NIFTI_DTYPES.items()}

# NIfTI-1 and NIfTI-2 field layouts: (offset, struct format)
_N1 = {
    "dim": (40, "8h"),
    "datatype": (70, "h"),
    "bitpix": (72, "h"),
    "pixdim": (76, "8f"),
    "vox_offset": (108, "f"),
    "scl_slope": (112, "f"),
    "scl_inter": (116, "f"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    "quatern": (256, "6f"),
    "srow": (280, "12f"),
    "size": 348,
}
_N2 = {
    "dim": (16, "8q"),
    "datatype": (12, "h"),
    "bitpix": (14, "h"),
    "pixdim": (104, "8d"),
    "vox_offset": (168, "q"),
    "scl_slope": (176, "d"),
    "scl_inter": (184, "d"),
    "qform_code": (344, "i"),
    "sform_code": (348, "i"),
    "quatern": (352, "6d"),
    "srow": (400, "12d"),
    "size": 540,
}


def _get(raw: bytes, layout: dict, name: str, endian: str):
    offset, fmt = layout[name]
    values = struct.unpack_from(endian + fmt, raw, offset)
    return values if len(values) > 1 else values[0]


def _quaternion_affine(quatern, pixdim) -> np.ndarray:
    b, c, d, qx, qy, qz = quatern
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    zooms = np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
    affine = np.eye(4)
    affine[:3, :3] = rotation * zooms
    affine[:3, 3] = (qx, qy, qz)
    return affine


def _read_nifti(path: Path) -> Volume:
    raw = _read_bytes(path)
    if len(raw) < 348:
        raise VolumeError(f"{path.name}: not a NIfTI file (only {len(raw)} bytes)")
    layout = endian = None
    for candidate, size in ((_N1, 348), (_N2, 540)):
        for end in "<>":
            if struct.unpack_from(end + "i", raw, 0)[0] == size:
                layout, endian = candidate, end
    if layout is None:
        raise VolumeError(f"{path.name}: not a NIfTI file (bad header size)")
    dims = _get(raw, layout, "dim", endian)
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise VolumeError(f"{path.name}: corrupt NIfTI header (dim[0]={ndim})")
    shape = tuple(int(d) for d in dims[1 : ndim + 1])
    code = _get(raw, layout, "datatype", endian)
    if code not in _NIFTI_DTYPES:
        raise VolumeError(f"{path.name}: unsupported NIfTI voxel type code {code}")
    dtype = np.dtype(_NIFTI_DTYPES[code]).newbyteorder(endian)
    offset = int(_get(raw, layout, "vox_offset", endian)) or layout["size"] + 4
    count = int(np.prod(shape))
    if len(raw) < offset + count * dtype.itemsize:
        raise VolumeError(
            f"{path.name}: truncated NIfTI file ({len(raw)} bytes, {offset + count * dtype.itemsize} expected)"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    slope, inter = _get(raw, layout, "scl_slope", endian), _get(raw, layout, "scl_inter", endian)
    if slope not in (0.0, 1.0) or inter != 0.0:
        data = data * np.float32(slope or 1.0) + np.float32(inter)
    pixdim = _get(raw, layout, "pixdim", endian)
    if _get(raw, layout, "sform_code", endian) > 0:
        affine = np.eye(4)
        affine[:3, :] = np.array(_get(raw, layout, "srow", endian)).reshape(3, 4)
    elif _get(raw, layout, "qform_code", endian) > 0:
        affine = _quaternion_affine(_get(raw, layout, "quatern", endian), pixdim)
    else:  # ANALYZE-style: spacing only
        affine = np.diag([pixdim[1] or 1.0, pixdim[2] or 1.0, pixdim[3] or 1.0, 1.0])
    header = {"raw": raw[: layout["size"]], "layout": "n1" if layout is _N1 else "n2", "endian": endian}
    return Volume(np.asanyarray(data).copy(), affine, "nifti", header)


def _nifti_bytes(data: np.ndarray, header_raw: bytes, compress: bool) -> bytes:
    """Header bytes of the source with the voxel type, scaling and extension flag replaced."""
    layout = _N1 if len(header_raw) == 348 else _N2
    endian = "<" if struct.unpack_from("<i", header_raw, 0)[0] == layout["size"] else ">"
    data = np.asarray(data)
    code = _NIFTI_CODES.get(data.dtype.newbyteorder("="))
    if code is None:
        data, code = data.astype(np.float32), 16
    header = bytearray(header_raw)

    def put(name, *values):
        offset, fmt = layout[name]
        struct.pack_into(endian + fmt, header, offset, *values)

    dims = [data.ndim] + list(data.shape) + [1] * (7 - data.ndim)
    put("dim", *dims)
    put("datatype", code)
    put("bitpix", data.dtype.itemsize * 8)
    put("vox_offset", layout["size"] + 4)
    put("scl_slope", 1.0)
    put("scl_inter", 0.0)
    if layout is _N1:  # cal_min, cal_max: a display range that may not fit the new data
        struct.pack_into(endian + "2f", header, 124, 0.0, 0.0)
    payload = bytes(header) + b"\0\0\0\0" + data.astype(data.dtype.newbyteorder(endian)).tobytes(order="F")
    return gzip.compress(payload, compresslevel=6, mtime=0) if compress else payload


def _quaternion_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], float, np.ndarray]:
    """(b, c, d, qx, qy, qz), qfac and zooms of the rotation closest to the affine's direction matrix."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    directions = affine[:3, :3] / zooms
    u, _, vt = np.linalg.svd(directions)
    rotation = u @ vt
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1
        qfac = -1.0
    trace = np.trace(rotation)
    # Shepperd's method: pick the largest of a, b, c, d for numerical stability
    candidates = [trace, rotation[0, 0], rotation[1, 1], rotation[2, 2]]
    k = int(np.argmax(candidates))
    r = rotation
    if k == 0:
        a = 0.5 * np.sqrt(1 + trace)
        b, c, d = (r[2, 1] - r[1, 2]) / (4 * a), (r[0, 2] - r[2, 0]) / (4 * a), (r[1, 0] - r[0, 1]) / (4 * a)
    elif k == 1:
        b = 0.5 * np.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2])
        a, c, d = (r[2, 1] - r[1, 2]) / (4 * b), (r[0, 1] + r[1, 0]) / (4 * b), (r[0, 2] + r[2, 0]) / (4 * b)
    elif k == 2:
        c = 0.5 * np.sqrt(1 - r[0, 0] + r[1, 1] - r[2, 2])
        a, b, d = (r[0, 2] - r[2, 0]) / (4 * c), (r[0, 1] + r[1, 0]) / (4 * c), (r[1, 2] + r[2, 1]) / (4 * c)
    else:
        d = 0.5 * np.sqrt(1 - r[0, 0] - r[1, 1] + r[2, 2])
        a, b, c = (r[1, 0] - r[0, 1]) / (4 * d), (r[0, 2] + r[2, 0]) / (4 * d), (r[1, 2] + r[2, 1]) / (4 * d)
    if a < 0:
        b, c, d = -b, -c, -d
    return (b, c, d, *affine[:3, 3]), qfac, zooms


def _nifti_header_from_affine(shape: tuple[int, ...], affine: np.ndarray) -> bytes:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    quatern, qfac, zooms = _quaternion_from_affine(affine)
    struct.pack_into("<8f", header, 76, qfac, *zooms, 1, 1, 1, 1)
    struct.pack_into("<b", header, 123, 2 | 8)  # xyzt_units: mm, seconds
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code: scanner
    struct.pack_into("<6f", header, 256, *quatern)
    struct.pack_into("<12f", header, 280, *affine[:3, :].ravel())
    header[344:348] = b"n+1\0"
    return bytes(header)


# ---------------------------------------------------------------- NRRD

_NRRD_TYPES = {
    "uchar": np.uint8,
    "unsigned char": np.uint8,
    "uint8": np.uint8,
    "uint8_t": np.uint8,
    "signed char": np.int8,
    "int8": np.int8,
    "int8_t": np.int8,
    "short": np.int16,
    "short int": np.int16,
    "signed short": np.int16,
    "int16": np.int16,
    "int16_t": np.int16,
    "ushort": np.uint16,
    "unsigned short": np.uint16,
    "uint16": np.uint16,
    "uint16_t": np.uint16,
    "int": np.int32,
    "signed int": np.int32,
    "int32": np.int32,
    "int32_t": np.int32,
    "uint": np.uint32,
    "unsigned int": np.uint32,
    "uint32": np.uint32,
    "uint32_t": np.uint32,
    "longlong": np.int64,
    "long long": np.int64,
    "int64": np.int64,
    "int64_t": np.int64,
    "ulonglong": np.uint64,
    "unsigned long long": np.uint64,
    "uint64": np.uint64,
    "uint64_t": np.uint64,
    "float": np.float32,
    "double": np.float64,
}
_NRRD_NAMES = {
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint64): "uint64",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}
_LPS_FLIP = np.diag([-1.0, -1.0, 1.0])
_SPACES = {
    "right-anterior-superior": np.eye(3),
    "ras": np.eye(3),
    "left-posterior-superior": _LPS_FLIP,
    "lps": _LPS_FLIP,
}


def _vector(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.strip().strip("()").split(",")])


def _read_nrrd(path: Path) -> Volume:
    raw = path.read_bytes()
    if not raw.startswith(b"NRRD"):
        raise VolumeError(f"{path.name}: not a NRRD file")
    end = raw.find(b"\n\n")
    if end < 0:
        raise VolumeError(f"{path.name}: NRRD header has no end")
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line:  # comments and key/value pairs
            continue
        if ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise VolumeError(f"{path.name}: detached NRRD data is not supported; save as a single .nrrd file")
    try:
        dtype = np.dtype(_NRRD_TYPES[fields["type"].lower()])
        sizes = [int(v) for v in fields["sizes"].split()]
    except KeyError as exc:
        raise VolumeError(f"{path.name}: NRRD header lacks or mis-states {exc}") from exc
    if fields.get("endian", "little") == "big":
        dtype = dtype.newbyteorder(">")
    body = raw[end + 2 :]
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise VolumeError(f"{path.name}: corrupt gzip data ({exc})") from exc
    elif encoding != "raw":
        raise VolumeError(f"{path.name}: NRRD encoding {encoding!r} is not supported (raw or gzip)")
    count = int(np.prod(sizes))
    if len(body) < count * dtype.itemsize:
        raise VolumeError(f"{path.name}: truncated NRRD data")
    data = np.frombuffer(body, dtype=dtype, count=count).reshape(sizes, order="F")
    tokens = re.findall(r"\(.*?\)|none", fields.get("space directions", ""))
    spatial = [i for i, token in enumerate(tokens) if token != "none"]
    directions = [tokens[i] for i in spatial]
    space = _SPACES.get(fields.get("space", "right-anterior-superior").lower())
    if space is None:
        raise VolumeError(f"{path.name}: NRRD space {fields['space']!r} is not supported")
    affine = np.eye(4)
    if directions:
        if len(directions) != 3 or len(sizes) != 3 or spatial != [0, 1, 2]:
            raise VolumeError(f"{path.name}: has {len(sizes)} axes; a stack must be a 3D volume")
        affine[:3, :3] = space @ np.stack([_vector(d) for d in directions], axis=1)
        affine[:3, 3] = space @ _vector(fields.get("space origin", "(0,0,0)"))
    elif "spacings" in fields:
        affine[:3, :3] = np.diag([float(v) for v in fields["spacings"].split()][:3])
    return Volume(data.copy(), affine, "nrrd", {"fields": fields})


def _nrrd_header_from_affine(affine: np.ndarray) -> dict:
    lps = _LPS_FLIP @ affine[:3, :3]
    origin = _LPS_FLIP @ affine[:3, 3]

    def fmt(v):
        return "(" + ",".join(repr(float(x)) for x in v) + ")"

    return {
        "fields": {
            "space": "left-posterior-superior",
            "space directions": " ".join(fmt(lps[:, i]) for i in range(3)),
            "space origin": fmt(origin),
            "kinds": "domain domain domain",
        }
    }


def _nrrd_bytes(data: np.ndarray, header: dict) -> bytes:
    data = np.asarray(data)
    name = _NRRD_NAMES.get(data.dtype.newbyteorder("="))
    if name is None:
        data, name = data.astype(np.float32), "float"
    keep = ("space", "space directions", "space origin", "kinds", "space units", "measurement frame")
    lines = [
        "NRRD0004",
        f"type: {name}",
        f"dimension: {data.ndim}",
        f"sizes: {' '.join(str(s) for s in data.shape)}",
        "endian: little",
        "encoding: gzip",
    ]
    lines += [f"{key}: {value}" for key, value in header.get("fields", {}).items() if key in keep]
    body = gzip.compress(data.astype(data.dtype.newbyteorder("<")).tobytes(order="F"), compresslevel=6, mtime=0)
    return ("\n".join(lines) + "\n\n").encode("latin-1") + body
