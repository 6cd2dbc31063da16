import gzip
import struct

import numpy as np
import pytest
from conftest import rotation

from FetalBrainSegLib.engine.volume_io import VolumeError, read_volume, write_mask, write_volume


def axis_codes(affine: np.ndarray) -> str:
    """Where each voxel axis points, e.g. 'LPS' (nibabel's aff2axcodes convention)."""
    codes = ""
    for column in affine[:3, :3].T:
        k = int(np.argmax(np.abs(column)))
        codes += ("RAS" if column[k] > 0 else "LPI")[k]
    return codes


def test_every_shared_stack_reads_with_the_manifests_shape_spacing_and_orientation(manifest):
    assert {r.split for r in manifest} == {"train", "test", "unlabelled"}
    import csv

    rows = {row["name"]: row for row in csv.DictReader(open(manifest[0].image.parents[1] / "manifest.csv"))}
    for record in manifest:
        volume = read_volume(record.image)
        row = rows[record.name]
        assert "x".join(map(str, volume.data.shape)) == row["shape"], record.name
        expected = [float(v) for v in row["spacing_mm"].split("x")]
        np.testing.assert_allclose(volume.spacing, expected, atol=0.006, err_msg=record.name)
        assert axis_codes(volume.affine) == row["orientation"], record.name
        if record.mask is not None:
            mask = read_volume(record.mask)
            assert mask.data.shape == volume.data.shape
            np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-4)


def oblique_affine(spacing=(0.9, 1.3, 4.0), angles=(20, -35, 50), origin=(-80.5, 12.25, 33.0)):
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.nrrd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_write_then_read_round_trips_voxels_and_an_oblique_anisotropic_affine(tmp_path, name, dtype):
    data = (np.random.default_rng(1).random((7, 5, 3)) * 100).astype(dtype)
    affine = oblique_affine()
    write_volume(data, affine, tmp_path / name)
    volume = read_volume(tmp_path / name)
    assert volume.data.dtype == dtype
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)


def test_qform_only_nifti_gives_the_same_affine(tmp_path):
    affine = oblique_affine()
    write_volume(np.zeros((4, 4, 4), np.int16), affine, tmp_path / "v.nii")
    raw = bytearray((tmp_path / "v.nii").read_bytes())
    struct.pack_into("<h", raw, 254, 0)  # sform_code = 0: the reader must fall back on the quaternion
    (tmp_path / "q.nii").write_bytes(bytes(raw))
    np.testing.assert_allclose(read_volume(tmp_path / "q.nii").affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_mask_copies_the_sources_geometry_exactly(tmp_path, manifest, suffix):
    source_path = tmp_path / f"source{suffix}"
    original = read_volume(manifest[2].image)
    write_volume(original.data, original.affine, source_path)
    source = read_volume(source_path)
    mask = (source.data > np.median(source.data)).astype(np.uint8)
    write_mask(source, mask, tmp_path / f"mask{suffix}")
    written = read_volume(tmp_path / f"mask{suffix}")
    assert written.data.dtype == np.uint8
    np.testing.assert_array_equal(written.data, mask)
    np.testing.assert_array_equal(written.affine, source.affine)
    if suffix == ".nii.gz":  # every header byte but type, scaling and display range is the source's
        a, b = source.header["raw"], read_volume(tmp_path / f"mask{suffix}").header["raw"]
        changed = [i for i in range(348) if a[i] != b[i]]
        assert all(70 <= i < 74 or 112 <= i < 120 or 124 <= i < 132 for i in changed), changed


def test_a_real_shared_stack_keeps_its_header_through_write_mask(tmp_path, t2w_test_record):
    source = read_volume(t2w_test_record.image)
    write_mask(source, np.ones(source.data.shape, np.uint8), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "m.nii.gz").affine, source.affine)


def test_bad_files_get_one_line_reasons(tmp_path):
    (tmp_path / "text.nii.gz").write_text("this is not an image")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.nrrd").write_bytes(b"P5 not a nrrd")
    write_volume(np.zeros((8, 8, 8), np.float32), np.eye(4), tmp_path / "full.nii")
    (tmp_path / "cut.nii").write_bytes((tmp_path / "full.nii").read_bytes()[:1000])
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress((tmp_path / "full.nii").read_bytes())[:-40])
    cases = {
        "missing.nii.gz": "no such file",
        "text.nii.gz": "not a NIfTI",
        "notes.txt": "not a NIfTI",
        "bad.nrrd": "not a NRRD",
        "cut.nii": "truncated",
        "cut.nii.gz": "corrupt gzip",
    }
    for name, reason in cases.items():
        with pytest.raises(VolumeError, match=reason) as info:
            read_volume(tmp_path / name)
        assert "\n" not in str(info.value)
