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
        a, b = source.header.binaryblock, written.header.binaryblock
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


# ---------------------------------------------------------------- the field's libraries (issue 13)


def nrrd_bytes(lines: list[str], body: bytes, newline: str = "\n") -> bytes:
    return (newline.join(["NRRD0004", *lines]) + newline + newline).encode() + body


def ras_affine_from_sitk(path) -> np.ndarray:
    """What ITK (SimpleITK) makes of a file's geometry, as a voxel -> RAS affine."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.array(image.GetOrigin())
    return affine


def test_an_nrrd_with_only_spacings_gets_a_mask_with_those_spacings(tmp_path):
    data = np.arange(4 * 5 * 6, dtype="<i2").reshape((4, 5, 6), order="F")
    source = tmp_path / "spacings.nrrd"
    source.write_bytes(
        nrrd_bytes(
            [
                "type: short",
                "dimension: 3",
                "sizes: 4 5 6",
                "spacings: 0.664 0.664 2.1",
                "encoding: raw",
                "endian: little",
            ],
            data.tobytes(order="F"),
        )
    )
    volume = read_volume(source)
    np.testing.assert_allclose(volume.spacing, [0.664, 0.664, 2.1])
    write_mask(volume, (volume.data > 50).astype(np.uint8), tmp_path / "mask.nrrd")
    import SimpleITK as sitk

    np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "mask.nrrd")).GetSpacing(), [0.664, 0.664, 2.1])


def test_space_dimension_without_space_is_lps_as_itk_reads_it_and_the_mask_opens_in_itk(tmp_path):
    data = np.arange(4 * 5 * 6, dtype="<i2").reshape((4, 5, 6), order="F")
    source = tmp_path / "space_dimension.nrrd"
    source.write_bytes(
        nrrd_bytes(
            [
                "type: short",
                "dimension: 3",
                "space dimension: 3",
                "sizes: 4 5 6",
                "space directions: (0.9,0.1,0) (-0.1,0.9,0) (0,0,3)",
                "space origin: (10,-20,30)",
                "encoding: raw",
                "endian: little",
            ],
            data.tobytes(order="F"),
        )
    )
    volume = read_volume(source)
    np.testing.assert_allclose(volume.affine, ras_affine_from_sitk(source), atol=1e-6)
    write_mask(volume, (volume.data > 50).astype(np.uint8), tmp_path / "mask.nrrd")
    np.testing.assert_allclose(ras_affine_from_sitk(tmp_path / "mask.nrrd"), volume.affine, atol=1e-6)


def test_byte_skip_crlf_detached_headers_and_every_encoding_read_the_same_voxels(tmp_path):
    import bz2

    data = np.arange(3 * 4 * 5, dtype="<i2").reshape((3, 4, 5), order="F")
    raw = data.tobytes(order="F")
    geometry = [
        "dimension: 3",
        "sizes: 3 4 5",
        "space: left-posterior-superior",
        "space directions: (1,0,0) (0,1,0) (0,0,2)",
        "space origin: (0,0,0)",
        "endian: little",
    ]
    (tmp_path / "voxels.raw").write_bytes(raw)
    cases = {
        "byte_skip.nrrd": nrrd_bytes(["type: short", *geometry, "encoding: raw", "byte skip: 16"], b"x" * 16 + raw),
        "crlf.nrrd": nrrd_bytes(["type: short", *geometry, "encoding: raw"], raw, newline="\r\n"),
        "bzip2.nrrd": nrrd_bytes(["type: short", *geometry, "encoding: bzip2"], bz2.compress(raw)),
        "ascii.nrrd": nrrd_bytes(
            ["type: short", *geometry, "encoding: ascii"], " ".join(str(v) for v in data.ravel(order="F")).encode()
        ),
        "signed_short_int.nrrd": nrrd_bytes(["type: signed short int", *geometry, "encoding: raw"], raw),
        "detached.nhdr": nrrd_bytes(["type: short", *geometry, "encoding: raw", "data file: voxels.raw"], b""),
        "lineskip_gz.nrrd": nrrd_bytes(
            ["type: short", *geometry, "encoding: gzip", "line skip: 2"],
            b"first line\nsecond line\n" + gzip.compress(raw),
        ),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        volume = read_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.data, data, err_msg=name)
        np.testing.assert_allclose(volume.spacing, [1, 1, 2], err_msg=name)
    for type_name, dtype in (("unsigned short int", np.uint16), ("long long int", np.int64)):
        values = data.astype(dtype)
        (tmp_path / "typed.nrrd").write_bytes(
            nrrd_bytes(
                [f"type: {type_name}", *geometry, "encoding: raw"],
                values.astype(values.dtype.newbyteorder("<")).tobytes("F"),
            )
        )
        assert read_volume(tmp_path / "typed.nrrd").data.dtype == dtype


def test_a_nifti_pair_is_read_and_its_mask_keeps_the_geometry(tmp_path):
    import nibabel

    affine = oblique_affine()
    data = (np.random.default_rng(2).random((6, 5, 4)) * 100).astype(np.int16)
    nibabel.save(nibabel.Nifti1Pair(data, affine), str(tmp_path / "pair.img"))
    for name in ("pair.hdr", "pair.img"):
        volume = read_volume(tmp_path / name)
        np.testing.assert_array_equal(volume.data, data)
        np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    write_mask(volume, (data > 50).astype(np.uint8), tmp_path / "pair_brainmask.nii.gz")
    written = read_volume(tmp_path / "pair_brainmask.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)


def test_a_mask_keeps_a_big_endian_nifti_headers_fields(tmp_path):
    import nibabel

    affine = oblique_affine()
    image = nibabel.Nifti1Image(
        np.arange(60, dtype=">i2").reshape(3, 4, 5), affine, nibabel.Nifti1Header(endianness=">")
    )
    image.header.set_qform(affine, code=2)
    image.header.set_sform(affine, code=4)
    image.header.set_xyzt_units("mm", "msec")
    nibabel.save(image, str(tmp_path / "big.nii"))
    source = read_volume(tmp_path / "big.nii")
    assert source.header.endianness == ">"
    write_mask(source, (source.data > 10).astype(np.uint8), tmp_path / "mask.nii")
    written = nibabel.load(str(tmp_path / "mask.nii")).header
    assert written.endianness == ">" and written["qform_code"] == 2 and written["sform_code"] == 4
    for key in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "pixdim", "srow_x", "srow_y", "xyzt_units"):
        np.testing.assert_array_equal(written[key], source.header[key], err_msg=key)
    assert written.get_data_dtype() == np.uint8 and written.get_slope_inter() == (None, None)


def test_a_nan_scale_slope_means_unscaled_as_the_standard_says(tmp_path):
    write_volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4), tmp_path / "v.nii")
    raw = bytearray((tmp_path / "v.nii").read_bytes())
    struct.pack_into("<f", raw, 112, float("nan"))  # scl_slope
    (tmp_path / "nan_slope.nii").write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_volume(tmp_path / "nan_slope.nii").data, np.arange(24).reshape(2, 3, 4))


def test_damaged_files_name_themselves_in_one_line(tmp_path):
    data = np.zeros((8, 8, 8), np.int16)
    write_volume(data, np.eye(4), tmp_path / "good.nrrd")
    good = (tmp_path / "good.nrrd").read_bytes()
    (tmp_path / "damaged.nrrd").write_bytes(good[:-60] + b"\x00" * 60)  # a gzip stream cut and padded
    (tmp_path / "sizes.nrrd").write_bytes(
        nrrd_bytes(["type: short", "dimension: 3", "sizes: 8 eight 8", "encoding: raw"], data.tobytes())
    )
    write_volume(data, np.eye(4), tmp_path / "good.nii.gz")
    gz = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "damaged.nii.gz").write_bytes(gz[:20] + bytes(b ^ 0xFF for b in gz[20:60]) + gz[60:])
    for name in ("damaged.nrrd", "sizes.nrrd", "damaged.nii.gz"):
        with pytest.raises(VolumeError) as info:
            read_volume(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"{name}: ") and "\n" not in message, message
