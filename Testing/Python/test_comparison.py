"""The comparison table's pieces on real test stacks and on known scores."""

import numpy as np

from FetalBrainSegLib.comparison import ModelReport, challenging_keys, evaluate_model, table_rows, write_table
from FetalBrainSegLib.evaluation import SliceScore
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
    reports = [ModelReport("rfbsnet", scores("rfbsnet", ours), 2_163_384, 5.61, 30.0, 1.0),
               ModelReport("enet", scores("enet", ours - 0.05), 359_825, 0.94, 10.0, 0.5)]
    rows = table_rows(reports, challenging={("s", 0), ("s", 1)})
    assert np.isnan(rows[0]["p_ttest"]) and rows[1]["p_ttest"] < 1e-6 and rows[1]["p_wilcoxon"] < 0.001
    assert rows[0]["aDice_challenging"] == np.mean(ours[:2])
    text = write_table(rows, tmp_path, "4000 steps, batch 8").read_text()
    assert "| enet | 0.8950 |" in text and "4000 steps" in text and "smallest third" in text
    assert (tmp_path / "table1.csv").read_text().count("\n") == 3


def test_a_real_model_is_scored_and_timed(manifest):
    record = next(r for r in manifest if r.name == "e2mip_testing_0000")
    report = evaluate_model("rfbsnet", default_weights_path(), [record], device="cpu", runs=3)
    assert len(report.scores) == 12 and report.parameters > 2_000_000 and report.ms_mean > 0
