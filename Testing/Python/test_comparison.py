"""The comparison table's pieces on real test stacks and on known scores."""

import csv

import numpy as np
from conftest import subset_manifest

from experiments.study.comparison import (
    ModelReport,
    brain_slice_areas,
    challenging_keys,
    evaluate_model,
    table_rows,
    write_table,
)
from experiments.study.comparison_run import ComparisonConfig, pick_montage_keys, run_comparison
from FetalBrainSegLib.engine.stack import slice_axis
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.metrics import dice_iou
from FetalBrainSegLib.evaluation.scores import SliceScore
from FetalBrainSegLib.resources import default_weights_path


def test_the_challenging_subset_is_the_smallest_third_of_brain_slices(manifest):
    t2w_test = [r for r in manifest if r.split == "test" and r.modality == "T2W"]
    keys = challenging_keys(t2w_test)
    assert 61 / 3 - 2 <= len(keys) <= 61 / 3 + 2  # 61 brain slices in the T2W test split
    assert {name for name, _ in keys} <= {r.name for r in t2w_test}


def scores(name, dice):
    return [SliceScore("s", "T2W", k, True, True, d, d / (2 - d)) for k, d in enumerate(dice)]


def test_table_rows_compare_every_model_with_rfbsnet(tmp_path):
    ours = np.linspace(0.90, 0.99, 12)
    reports = [
        ModelReport("rfbsnet", scores("rfbsnet", ours), 2_163_384, 5.61, 30.0, 1.0, {}, []),
        ModelReport("enet", scores("enet", ours - 0.05), 359_825, 0.94, 10.0, 0.5, {}, []),
    ]
    rows = table_rows(reports, challenging={("s", 0), ("s", 1)})
    assert np.isnan(rows[0]["p_ttest"]) and rows[1]["p_ttest"] < 1e-6 and rows[1]["p_wilcoxon"] < 0.001
    assert rows[0]["aDice_challenging"] == np.mean(ours[:2])
    text = write_table(rows, tmp_path, "4000 steps, batch 8").read_text()
    assert "| enet | 0 | 0.8950 (0.8" in text and "4000 steps" in text and "smallest third" in text
    low, high = rows[1]["aDice_ci_low"], rows[1]["aDice_ci_high"]
    assert low < rows[1]["aDice"] < high and high - low < 0.05
    assert (tmp_path / "table1.csv").read_text().count("\n") == 3


def test_a_real_model_is_scored_timed_and_its_montage_slices_kept(manifest):
    record = next(r for r in manifest if r.name == "e2mip_testing_0000")
    keys = pick_montage_keys([record], count=2)
    report = evaluate_model(
        "rfbsnet", default_weights_path(), [record], device="cpu", runs=3, montage_keys=keys, batch_sizes=(1, 4)
    )
    assert len(report.scores) == 12 and report.parameters > 2_000_000 and report.ms_mean > 0
    assert set(report.batch_ms) == {1, 4} and all(ms > 0 for ms in report.batch_ms.values())
    truth = read_volume(record.mask)
    axis = slice_axis(truth.affine)
    for (stack, k), mask in zip(keys, report.montage):
        manual = np.take(truth.data, k, axis=axis) > 0
        assert stack == record.name and mask.shape == manual.shape
        score = next(s for s in report.scores if s.slice == k)
        assert score.has_brain and abs(dice_iou(mask[None] > 0, manual[None])[0][0] - score.dice) < 1e-6


def test_montage_slices_run_from_the_largest_brain_into_the_challenging_subset(manifest):
    t2w_test = [r for r in manifest if r.split == "test" and r.modality == "T2W"]
    keys = pick_montage_keys(t2w_test)
    areas = {(name, k): area for name, k, area in brain_slice_areas(t2w_test)}
    assert len(keys) == 4 and all(key in areas for key in keys)
    assert [areas[key] for key in keys] == sorted((areas[key] for key in keys), reverse=True)
    assert keys[-1] in challenging_keys(t2w_test) and keys[0] not in challenging_keys(t2w_test)


def test_the_comparison_trains_scores_plots_and_resumes(manifest_path, tmp_path):
    # two small train stacks per modality (one of each is validated on) and the whole T2W test split, which it scores
    few = {"e2mip_training_0003", "e2mip_validation_slice_T2W_vol0005"}  # 16 and 5 slices
    few |= {"e2mip_validation_slice_DWI_vol0000", "e2mip_validation_slice_FMRI_vol0017"}  # 4 and 9
    small = subset_manifest(manifest_path, lambda row: row["name"] in few or row["split"] == "test", tmp_path / "data")
    config = ComparisonConfig(
        small,
        tmp_path / "runs",
        tmp_path / "results",
        steps=2,
        models=("rfbsnet", "dfanet"),
        device="cpu",
        timing_runs=2,
        batch_sizes=(1, 2),
        parallel=2,
    )
    written = run_comparison(config, log=lambda line: None)
    assert {p.name for p in written} == {
        "table1.md",
        "fig4_batch_time.png",
        "fig5_speed_accuracy.png",
        "fig3_montage.jpg",
        "comparison_validation.png",
    }
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written if p.suffix == ".png")
    assert (tmp_path / "results" / "fig3_montage.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    table = (tmp_path / "results" / "table1.md").read_text()
    assert "| rfbsnet |" in table and "| dfanet |" in table and "2 steps of batch 8 (160x160 crops) on cpu (" in table
    assert "| dfanet | 2 | " in table
    with (tmp_path / "results" / "table1.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["parameters"] for r in rows] == ["2166328", "418354"] and rows[1]["p_ttest"] != "nan"
    assert (tmp_path / "results" / "fig4_batch_time.csv").read_text().count("\n") == 3
    report = (tmp_path / "runs" / "dfanet" / "report.json").stat().st_mtime
    run_comparison(config, log=lambda line: None)  # done work is reused, not redone
    assert (tmp_path / "runs" / "dfanet" / "report.json").stat().st_mtime == report


def test_fig5_places_the_products_end_to_end_time_beside_the_networks(tmp_path):
    """experiments/fig5_product.py on the committed Table 1, GPU latency and T2W test evaluation."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    results = REPO_ROOT / "docs" / "results"
    run = subprocess.run(
        [sys.executable, "-m", "experiments.fig5_product", "-o", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tmp_path / "fig5_speed_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    with (results / "gpu_h200" / "latency.csv").open() as handle:
        p50 = next(float(r["p50_ms"]) for r in csv.DictReader(handle) if r["backend"] == "torch on cuda")
    with (results / "t2w_test" / "slices.csv").open() as handle:
        shipped = np.mean([float(r["dice"]) for r in csv.DictReader(handle)])
    assert f"shipped weights end to end: {p50:.1f} ms per slice, aDice {shipped:.4f}" in run.stdout

    missing = subprocess.run(
        [sys.executable, "-m", "experiments.fig5_product", "--backend", "openvino int8", "-o", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "has no row 'openvino int8'" in missing.stderr
