"""The latency benchmark: every runtime variant is timed end to end and reported with the
machine's peaks from the same run. Timings themselves are never asserted."""

import csv

import pytest
from conftest import subset_manifest

from FetalBrainSegLib.evaluation.latency import latency_benchmark, write_latency_report

SCORED = ("e2mip_testing_0000", "e2mip_testing_0561")  # the smallest T2W and EPI test stacks: 0.79 pooled


def test_latency_benchmark_times_and_scores_each_precision_and_writes_its_report(shared_data, manifest_path, tmp_path):
    """The report's shape, in quick mode, scoring one test stack per modality (INT8's accuracy over the whole test
    split is test_backends'); the figures themselves are the benchmark's, never asserted."""
    stack = shared_data / "samples" / "f0832s1_fetus_04.nii.gz"
    scored = subset_manifest(manifest_path, lambda r: r["name"] in SCORED, tmp_path / "data")
    rows, peaks, gflop = latency_benchmark(
        stack, ["onnxruntime"], repeats=3, warmup=1, log=lambda _: None, manifest=scored, quick=True
    )
    assert [r["backend"] for r in rows] == ["onnxruntime fp32 on cpu", "onnxruntime int8 on cpu"]
    assert all(r["stack_slices"] == 40 and r["p99_ms"] >= r["p50_ms"] > 0 and r["stack_ms"] > 0 for r in rows)
    assert {r["stack_zoom"] for r in rows} == {"1 (quick)"}  # one pass: the report's shape, not its figures
    assert gflop == pytest.approx(5.61, abs=0.01)  # 2 x 2.80 GMAC per slice
    assert list(peaks) == ["cpu"] and set(peaks["cpu"]) == {"fp32", "bf16", "int8"} and peaks["cpu"]["fp32"] > 0
    for row in rows:
        assert row["device"] == "cpu"
        assert row["of_fp32_peak"] == pytest.approx(row["achieved_gflops"] / peaks["cpu"]["fp32"])
    fp32, int8 = rows
    assert all(r["wide_grid"] == "352x352" and r["wide_stack_ms"] > 0 and r["wide_p50_ms"] > 0 for r in rows)
    assert fp32["dice_vs_fp32_torch"] >= 0.999 and 0.985 <= int8["dice_vs_fp32_torch"] < 1  # as test_backends
    assert 0.75 < fp32["dice_vs_manual"] < 0.95 and int8["dice_vs_manual"] >= fp32["dice_vs_manual"] - 0.005

    report = write_latency_report(rows, peaks, gflop, stack, tmp_path)
    text = report.read_text()
    assert "| onnxruntime int8 on cpu |" in text and "f0832s1_fetus_04.nii.gz" in text and "zoom 1 (quick)" in text
    assert f"| {int8['dice_vs_fp32_torch']:.4f} | {int8['dice_vs_manual']:.4f} |" in text
    assert f"cpu (2048² product) fp32 {peaks['cpu']['fp32']:.0f} GFLOP/s" in text
    assert "- git_revision:" in text and "- machine:" in text  # the provenance footer
    assert "## A 400 mm field of view" in text and "| onnxruntime fp32 on cpu | 352x352 |" in text
    with (tmp_path / "latency.csv").open() as handle:
        assert [r["backend"] for r in csv.DictReader(handle)] == [r["backend"] for r in rows]


def test_a_copy_of_the_tree_elsewhere_names_its_revision(monkeypatch):
    from FetalBrainSegLib.provenance import git_revision

    here = git_revision()
    assert here != "unknown"  # the tests run in the repository
    monkeypatch.setenv("FETALBRAINSEG_REVISION", "425f7de39393")
    assert git_revision() == "425f7de39393"
