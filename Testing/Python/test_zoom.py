"""Head-size adaptation (engine/zoom.py): a head the first pass finds small is segmented again, magnified,
and the engine keeps whichever pass the network is surer of."""

import numpy as np
import pytest
from conftest import load_pair

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.engine.zoom import TARGET_DIAMETER_MM, ZOOM_RANGE, brain_diameter, head_zoom
from FetalBrainSegLib.evaluation.head_size import head_scaled
from FetalBrainSegLib.evaluation.scores import score_stack, summarize

pytestmark = pytest.mark.usefixtures("network_answers_reused")  # conftest.py NetworkAnswers


def disk(diameter_px: float, size: int = 200) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size / 2
    return (np.hypot(x, y) <= diameter_px / 2)[None].astype(np.uint8)


def test_the_zoom_aims_the_largest_brain_section_at_the_target_within_limits():
    assert brain_diameter(disk(100), 1.0) == pytest.approx(100, rel=0.02)
    assert brain_diameter(np.concatenate([disk(40), disk(100)]), 0.25) == pytest.approx(50, rel=0.02)  # mm
    assert head_zoom(disk(100), 1.0) == pytest.approx(TARGET_DIAMETER_MM / 100, rel=0.02)
    assert head_zoom(disk(40), 1.0) == ZOOM_RANGE[1]  # a tiny head: magnified as far as allowed
    assert head_zoom(disk(190), 1.0) == ZOOM_RANGE[0]
    assert head_zoom(disk(TARGET_DIAMETER_MM), 1.0) == 1.0  # already right: no second pass
    assert head_zoom(np.zeros((3, 20, 20), np.uint8), 1.0) == 1.0  # nothing found: nothing to adapt to


def brain_dice(result, truth, name):
    return summarize(score_stack(result.mask, truth, result.slice_axis, name, "EPI"))["aDice_brain"]


def test_a_small_head_is_found_again_magnified_in_a_second_pass_of_chunks(manifest):
    """An EPI stack whose head is presented at 0.45 of its size (a much younger fetus): one pass at zoom 1
    loses half the brain; the second pass, magnified, finds it (experiments/tune_zoom.py)."""
    record = next(r for r in manifest if r.name == "e2mip_sample_dwi_0633s1_B0")
    volume, truth = load_pair(record)
    small = head_scaled(volume, 0.45)
    truth = truth.reshape(volume.data.shape)
    one_pass = Segmenter(device="cpu", backend="torch", zoom=1.0).segment(small)
    chunks = []
    adapted = Segmenter(device="cpu", backend="torch").segment(small, on_chunk=chunks.append)
    assert one_pass.zoom == 1.0 and adapted.zoom > 1.2
    assert brain_dice(adapted, truth, record.name) > brain_dice(one_pass, truth, record.name) + 0.3
    passes = [(c.pass_number, c.zoom, c.choice) for c in chunks]
    n = -(-one_pass.num_slices // 8)
    # every slice twice (the second pass starts at slice 0 again), then the choice: the second pass, kept
    assert passes == [(1, 1.0, False)] * n + [(2, adapted.zoom, False)] * n + [(2, adapted.zoom, True)]
    assert (chunks[-1].start, chunks[-1].stop) == (0, one_pass.num_slices)


def section_areas(result, pixel_area):
    mask = np.moveaxis(result.mask, result.slice_axis, 0)
    return mask.reshape(len(mask), -1).sum(axis=1) * pixel_area


@pytest.mark.parametrize("name,collapsed", [("f0832s1_fetus_03", 6), ("f0832s1_fetus_04", 25)])
def test_the_default_never_bites_the_cc0_samples_where_one_pass_finds_a_whole_brain(shared_data, name, collapsed):
    """On both CC0 samples the second pass (zoom 1.28 and 1.38) bit the masks: 2,742 -> 104 mm2 on a slice
    of fetus_04, and no brain on slices 0-12 of fetus_03 where zoom 1 finds 2,000-3,400 mm2 of plainly
    visible brain. The network is less sure of those bitten masks, so the default keeps the first pass,
    and the review names the slices where the passes disagree (`collapsed`: one the second pass lost)."""
    volume = read_volume(shared_data / "samples" / f"{name}.nii.gz")
    default = Segmenter(device="cpu", backend="onnxruntime").segment(volume, name)
    one_pass = Segmenter(device="cpu", backend="onnxruntime", zoom=1.0).segment(volume, name)
    pixel_area = Segmenter(device="cpu", backend="onnxruntime").stack(volume).pixel_area
    adapted, whole = section_areas(default, pixel_area), section_areas(one_pass, pixel_area)
    bitten = np.flatnonzero((whole >= 1000) & (adapted < 0.5 * whole))
    assert not bitten.size, f"slices {bitten.tolist()}: {adapted[bitten].round()} mm2 against {whole[bitten].round()}"
    if name == "f0832s1_fetus_03":
        assert (adapted[5:14] >= 1000).sum() >= 7  # brain plainly visible on slices 5-13, before: none
    assert "passes disagree" in default.review[collapsed].reasons


def test_a_fixed_zoom_is_checked_and_used_as_given(t2w_test_record):
    volume, _ = load_pair(t2w_test_record)
    with pytest.raises(ValueError, match="zoom must"):
        Segmenter(device="cpu", zoom="large")
    with pytest.raises(ValueError, match="zoom must lie between"):
        Segmenter(device="cpu", zoom=0)
    chunks = []
    result = Segmenter(device="cpu", zoom=1.5).segment(volume, on_chunk=chunks.append)
    assert result.zoom == 1.5 and {c.zoom for c in chunks} == {1.5} and len(chunks) == -(-result.num_slices // 8)


def test_the_command_line_says_when_the_first_pass_is_kept(shared_data, tmp_path, capsys):
    """Its progress showed "second pass, zoom 1.38" on fetus_04, which a user reads as the mask they get."""
    from FetalBrainSegLib.cli import main

    stack = shared_data / "samples" / "f0832s1_fetus_04.nii.gz"
    assert main(["segment", str(stack), "-o", str(tmp_path), "--backend", "onnxruntime"]) == 0
    assert "f0832s1_fetus_04.nii.gz: the second pass looked bitten; the first pass is kept" in capsys.readouterr().err
