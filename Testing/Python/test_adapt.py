"""Site adaptation (training/adapt.py, engine/site_models.py): a site model learnt from corrected stacks, kept
only when it beats the base weights on held-out corrections, used for its modality only, and movable."""

import threading

import numpy as np
import pytest
from conftest import dice

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.postprocess import add_margin
from FetalBrainSegLib.engine.site_models import list_site_models, resolve_model
from FetalBrainSegLib.engine.volume_io import VolumeError, read_volume, write_volume
from FetalBrainSegLib.training.adapt import AdaptationCancelled, AdaptSettings, adapt
from FetalBrainSegLib.training.config import MIN_GAIN


def pairs(manifest, *names):
    records = {r.name: r for r in manifest}
    return [(records[n].image, records[n].mask) for n in names]


QUICK = dict(steps=40, check_every=20, minutes=5, device="cpu", batch_size=4, lr=5e-4)
SMALL_T2W = "e2mip_validation_slice_T2W_vol0005"  # 5 slices: one held out, four to train on, for plumbing
EPI_PAIR = ("e2mip_train_slice_DWI_vol0003", "e2mip_train_slice_DWI_vol0004")  # one site's EPI, held out of training
FIRST_GAIN = dict(steps=25, check_every=25, minutes=5, device="cpu")  # the defaults, as far as their first check


@pytest.fixture(scope="module")
def epi_site(manifest):
    """One EPI stack the shipped weights segment poorly (held-out slices 0.87), 25 steps: they raise its held-out
    slices, yet the site's other EPI stack falls 7 points (below). Written whatever the verdict (min_gain -1),
    so that a site model's record, listing and use can be tested; the verdict itself is asserted."""
    return adapt(pairs(manifest, EPI_PAIR[0]), AdaptSettings("epi-test", **FIRST_GAIN, min_gain=-1.0))


def test_one_stack_a_step_that_loses_brain_under_another_look_is_refused(epi_site):
    """The forgetting the held-out slices miss, seen from one corrected stack alone: the step raises its held-out
    slices, and the brain-finding guard refuses it (it shrinks brain the shipped weights find on the stack's
    slices as other scanners might show them). The shipped weights' state is what stays."""
    (_, before, _), (step, after, _) = epi_site.history
    assert after >= before + 0.005 and epi_site.lost_brain and epi_site.lost_brain[0][0] == step == 25
    assert epi_site.steps == 0 and epi_site.held_out_after == epi_site.held_out_before
    assert "not kept, as they lost brain the base model finds" in epi_site.summary()


def test_a_site_model_records_where_it_came_from_and_is_listed(epi_site, manifest):
    assert epi_site.kept and epi_site.path.is_file() and epi_site.modality == "EPI"
    assert epi_site.history[0] == (0, epi_site.held_out_before, None) and epi_site.unseen == ""  # one stack
    assert "site model written" in epi_site.summary()
    listed = {m.name: m for m in list_site_models()}
    site = listed["epi-test"].site
    assert site["modality"] == "EPI" and site["steps"] == epi_site.steps and len(site["stacks"]) == 1
    assert all(len(s["image_sha256"]) == 64 and len(s["mask_sha256"]) == 64 for s in site["stacks"])
    assert site["held_out_before"] == round(epi_site.held_out_before, 4)
    assert site["base"].endswith("rfbsnet_fetal_brain.pt") and site["unseen_stack"] == ""
    assert site["guard_slices"] > 0 and site["lost_brain_refused"] == [list(x) for x in epi_site.lost_brain]
    assert resolve_model("epi-test") == epi_site.path
    with pytest.raises(FileExistsError, match="exists"):
        adapt(pairs(manifest, EPI_PAIR[0]), AdaptSettings("epi-test", **FIRST_GAIN))
    with pytest.raises(ValueError, match="no site model named 'nowhere'; site models: .*epi-test"):
        resolve_model("nowhere")


def test_a_step_that_loses_on_a_corrected_stack_it_never_trained_on_is_never_kept(epi_site, manifest):
    """The forgetting the held-out slices miss: the same 25 steps on the same stack raise its held-out slices
    (above, where the brain-finding guard refuses them), while the site's other EPI stack, now corrected too and
    held out whole, falls by points. Two corrected stacks: the base weights are kept, and the summary says why."""
    guarded = adapt(pairs(manifest, *EPI_PAIR), AdaptSettings("epi-guarded", **FIRST_GAIN))
    assert guarded.unseen == f"{EPI_PAIR[1]}.nii.gz"  # equal lengths: the last is held out whole
    (_, slices_before, unseen_before), (_, slices_after, unseen_after) = guarded.history
    assert (slices_before, slices_after) == pytest.approx([score for _, score, _ in epi_site.history])
    assert slices_after >= slices_before + 0.005 and unseen_after < unseen_before - 0.03
    assert not guarded.kept and guarded.steps == 0 and guarded.unseen_after == guarded.unseen_before
    assert f"without losing more than 0.005 on {EPI_PAIR[1]}.nii.gz" in guarded.summary()
    assert "epi-guarded" not in {m.name for m in list_site_models()}


def test_the_brain_finding_guard_counts_brain_a_model_loses_under_another_scanners_look(manifest):
    """A guard inside one site cannot see other sites (all three of a hospital's stacks corrected: its held-out
    stack lost 0.25 points while other sites' stacks lost brain slices). The guard's slices are the corrected
    brain slices as other scanners might show them; the base model loses none by definition, a model drawing
    wider masks (a site's convention) none either, and one that stopped finding brain every one the base found."""
    import copy

    import torch

    from FetalBrainSegLib.models.weights import load_weights
    from FetalBrainSegLib.resources import default_weights_path
    from FetalBrainSegLib.training.adapt import BrainFindingGuard, corrected_slices, other_looks
    from FetalBrainSegLib.training.config import GUARD_VIEWS

    model, metadata = load_weights(default_weights_path())
    images, masks, *_ = corrected_slices(pairs(manifest, "e2mip_testing_0000"), 1.2)
    with_brain = masks.any(axis=(1, 2))
    looks = other_looks(images, masks, seed=0)
    assert len(looks) == GUARD_VIEWS * with_brain.sum()
    assert not np.allclose(looks[: with_brain.sum()], images[with_brain], atol=0.05)  # another look indeed
    guard = BrainFindingGuard(model, images, masks, 0, "cpu")
    assert guard.size == len(looks) and np.array_equal(guard.slices, looks)  # the same looks, built on first use
    assert guard.found.mean() > 0.8 and guard.lost(model) == 0
    wider, blind = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        wider.classifier.bias[1] += 2.0  # brain wins wherever it nearly did
        blind.classifier.bias[1] -= 100.0  # the brain class never wins
    assert guard.lost(wider) == 0 and guard.lost(blind) == guard.found.sum() > 0


def test_a_step_that_loses_brain_under_another_look_is_never_kept(manifest, monkeypatch):
    """The guard's verdict inside adapt (its counting is tested above): every new best it finds lost brain in is
    refused, the base weights are kept, and the summary and result say which steps and how many slices."""
    from FetalBrainSegLib.training import adapt as adaptation

    scored = iter(np.linspace(0.5, 0.9, 10))  # each check a new best: a gain by MIN_GAIN and more
    monkeypatch.setattr(adaptation, "held_out_dice", lambda *_: float(next(scored)))
    monkeypatch.setattr(adaptation.BrainFindingGuard, "lost", lambda self, model: 3)
    plumbing = {**QUICK, "steps": 3, "check_every": 1}
    result = adapt(pairs(manifest, SMALL_T2W), AdaptSettings("lost-brain", **plumbing))
    assert not result.kept and result.steps == 0 and result.lost_brain == [(1, 3), (2, 3), (3, 3)]
    assert max(score for _, score, _ in result.history) > result.held_out_before + MIN_GAIN  # gains, refused
    assert "lost brain the base model finds" in result.summary() and "lost-brain" not in {
        m.name for m in list_site_models()
    }


def test_a_stack_of_another_modality_is_segmented_with_the_base_weights(epi_site, manifest):
    """The trial's forgetting: a T2W site model lost the brain on EPI. A site model is never used on a stack of
    the modality it did not learn unless asked."""
    t2w = read_volume(next(r for r in manifest if r.name == "e2mip_testing_0000").image)
    site, base = Segmenter(epi_site.path, device="cpu", zoom=1.0), Segmenter(device="cpu", zoom=1.0)
    result = site.segment(t2w, "t2w")
    assert "looks T2W and the site model learnt EPI" in result.base_instead
    assert np.array_equal(result.mask, base.segment(t2w).mask)
    insisted = Segmenter(epi_site.path, device="cpu", zoom=1.0, any_modality=True).segment(t2w, "t2w")
    assert insisted.base_instead == ""
    epi = read_volume(next(r for r in manifest if r.name == "e2mip_testing_0560").image)
    assert site.segment(epi).base_instead == ""  # its own modality: the site model


def test_a_site_model_that_does_not_beat_the_base_is_not_written(manifest):
    still = {**QUICK, "lr": 0.0, "l2sp": 0.0, "steps": 2, "check_every": 1}  # nothing learnt
    result = adapt(pairs(manifest, SMALL_T2W), AdaptSettings("no-gain", **still))
    assert not result.kept and result.path is None and result.held_out_after == result.held_out_before
    assert "base weights kept, nothing written" in result.summary()
    assert "no-gain" not in {m.name for m in list_site_models()}


def test_cancel_writes_nothing_and_bad_corrections_get_clear_errors(manifest, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(AdaptationCancelled, match="nothing was written"):
        adapt(pairs(manifest, SMALL_T2W), AdaptSettings("cancelled", **QUICK), cancel=cancel)
    assert "cancelled" not in {m.name for m in list_site_models()}
    with pytest.raises(ValueError, match="several modalities"):
        adapt(pairs(manifest, SMALL_T2W, "e2mip_train_slice_DWI_vol0000"), AdaptSettings("mixed", **QUICK))
    image, mask = pairs(manifest, SMALL_T2W)[0]
    source = read_volume(mask)
    write_volume(np.zeros_like(source.data), source.affine, tmp_path / "empty.nii.gz")
    with pytest.raises(VolumeError, match="holds no brain"):
        adapt([(image, tmp_path / "empty.nii.gz")], AdaptSettings("empty", **QUICK))
    other = pairs(manifest, "mial_t30_coronal1")[0][1]
    with pytest.raises(VolumeError, match=f"not on the grid of {SMALL_T2W}"):
        adapt([(image, other)], AdaptSettings("mismatch", **QUICK))
    with pytest.raises(ValueError, match="name is 1-64 letters"):
        adapt([(image, mask)], AdaptSettings("../escape", **QUICK))


def test_site_models_move_between_machines_as_one_file(epi_site, tmp_path, capsys):
    from FetalBrainSegLib.cli import main

    assert main(["models", "--export", "epi-test", str(tmp_path / "epi.onnx")]) == 0
    assert main(["models", "--import", str(tmp_path / "epi.onnx"), "--name", "epi-copy"]) == 0
    assert main(["models", "--sites-only"]) == 0
    listing = capsys.readouterr().out
    assert "epi-copy: EPI, from 1 corrected stack(s)" in listing and "epi-test: EPI" in listing
    assert main(["models", "--import", str(tmp_path / "epi.onnx"), "--name", "epi-copy"]) != 0  # never replaced
    assert "exists" in capsys.readouterr().err


def test_the_margin_grows_each_slice_in_plane_by_millimetres_on_anisotropic_pixels():
    mask = np.zeros((40, 60, 3), np.uint8)
    mask[20, 30, 1] = 1
    grown = add_margin(mask, 2, (0.5, 1.0, 3.0), 2.0)  # 2 mm: 4 pixels along the first axis, 2 along the second
    assert grown[:, :, 0].sum() == 0 and grown[:, :, 2].sum() == 0  # in-plane only
    rows, columns = np.nonzero(grown[:, :, 1])
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (16, 24, 28, 32)
    assert np.array_equal(add_margin(mask, 2, (0.5, 1.0, 3.0), 0.0), mask)
    with pytest.raises(ValueError, match="0 mm or more"):
        add_margin(mask, 2, (0.5, 1.0, 3.0), -1)


def test_the_margin_in_the_cli_is_recorded_in_the_mask_header(t2w_test_record, tmp_path):
    import nibabel

    from FetalBrainSegLib.cli import main

    args = ["segment", str(t2w_test_record.image), "--quiet", "--zoom", "1"]
    assert main([*args, "-o", str(tmp_path / "tight")]) == 0
    assert main([*args, "-o", str(tmp_path / "loose"), "--margin-mm", "3"]) == 0
    tight = read_volume(tmp_path / "tight" / "e2mip_testing_0000_brainmask.nii.gz").data
    loose_file = tmp_path / "loose" / "e2mip_testing_0000_brainmask.nii.gz"
    loose = read_volume(loose_file).data
    assert (loose >= tight).all() and loose.sum() > 1.1 * tight.sum() and dice(loose, tight) > 0.8
    assert b"margin 3 mm" in nibabel.load(loose_file).header["descrip"].tobytes()


def test_an_interrupted_command_says_what_applies_to_it():
    """Ctrl-C in `stream` said "no mask was half-written; finished masks are kept", though stream writes none."""
    from FetalBrainSegLib.cli import INTERRUPTED, build_parser

    parser = build_parser()
    assert "mask" not in parser.parse_args(["stream", "--listen", "18944"]).interrupted
    assert "no site model was written" in parser.parse_args(["adapt", "a.nii.gz", "-o", "x"]).interrupted
    assert not hasattr(parser.parse_args(["segment", "a.nii.gz"]), "interrupted") and "mask" in INTERRUPTED


def test_serve_and_stream_take_a_site_model_by_name(tmp_path, capsys):
    from FetalBrainSegLib.cli import build_parser, main

    assert main(["serve", str(tmp_path), "--port", "18231", "--model", "nowhere"]) == 2
    assert "no site model named 'nowhere'" in capsys.readouterr().err
    assert build_parser().parse_args(["stream", "--listen", "18944", "--model", "chuv"]).model == "chuv"


def test_the_time_budget_ends_the_work_at_the_first_step_past_it(manifest):
    result = adapt(pairs(manifest, SMALL_T2W), AdaptSettings("budget", **{**QUICK, "minutes": 0.0}))
    assert [step for step, *_ in result.history] == [0, 1]  # the step past the budget is scored, then it stops


def test_the_adapt_command_pairs_stacks_with_their_exported_masks(manifest, tmp_path, capsys):
    import shutil

    from FetalBrainSegLib.cli import main

    image, mask = pairs(manifest, SMALL_T2W)[0]
    shutil.copy(image, tmp_path / "site.nii.gz")
    assert main(["adapt", str(tmp_path / "site.nii.gz"), "-o", "cli-site", "--steps", "2", "--quiet"]) == 2
    assert "no corrected mask for site.nii.gz (site_brainmask.nii.gz)" in capsys.readouterr().err
    shutil.copy(mask, tmp_path / "site_brainmask.nii.gz")  # as segment and the exports name it
    assert main(["adapt", str(tmp_path / "site.nii.gz"), "-o", "cli-site", "--steps", "2", "--quiet"]) == 0
    assert "held-out corrected slices, mean Dice: base 0.9" in capsys.readouterr().out
