"""Training smoke tests on real shared slices: the loss goes down, and a run resumes exactly."""

import numpy as np
import pytest
import torch
from conftest import subset_manifest

from FetalBrainSegLib.models.weights import load_weights
from FetalBrainSegLib.training.augment import AugmentSettings, brain_points, training_batch
from FetalBrainSegLib.training.config import TrainConfig
from FetalBrainSegLib.training.trainer import (
    Trainer,
    dice_loss,
    load_validation,
    segmentation_loss,
    validate,
    validation_score,
)

VAL = ("e2mip_validation_slice_T2W_vol0005",)


def test_dice_loss_is_zero_for_a_perfect_answer_and_one_for_predicting_nothing():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = torch.cat([-20 * (target * 2 - 1), 20 * (target * 2 - 1)], dim=1)
    assert float(dice_loss(perfect, target)) == pytest.approx(0, abs=1e-3)
    nothing = torch.cat([torch.full_like(target, 20), torch.full_like(target, -20)], dim=1)
    assert float(dice_loss(nothing, target)) == pytest.approx(1, abs=0.15)


def test_dice_plus_cross_entropy_is_near_zero_when_right_and_above_one_when_predicting_nothing():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = torch.cat([-20 * (target * 2 - 1), 20 * (target * 2 - 1)], dim=1)
    nothing = torch.cat([torch.full_like(target, 20), torch.full_like(target, -20)], dim=1)
    assert float(segmentation_loss(perfect, target, "dice_ce")) == pytest.approx(0, abs=1e-3)
    assert (
        float(segmentation_loss(nothing, target, "dice_ce")) > float(segmentation_loss(nothing, target, "dice")) + 0.5
    )
    with pytest.raises(ValueError, match="loss must be one of"):
        segmentation_loss(perfect, target, "focal")


def test_augmented_crops_keep_image_and_mask_aligned(trainer):
    """The image is the mask itself: whatever rotation, flip, scale and crop a batch gets, the two must agree."""
    brainy = np.flatnonzero(trainer.train_set.masks.any(axis=(1, 2)))[:16]
    masks = torch.from_numpy(trainer.train_set.masks[brainy])[:, None].float()
    points = brain_points(trainer.train_set.masks[brainy])
    settings = AugmentSettings(crop_size=160, brain_share=1.0, scale_range=(0.7, 1.4))
    generator = torch.Generator().manual_seed(0)
    from FetalBrainSegLib.training.augment import spatial

    images, crops = spatial(masks.clone(), masks, points, settings, generator)
    assert images.shape == crops.shape == (16, 1, 160, 160)
    agreement = ((images > 0.5) == (crops > 0.5)).float().mean()
    assert agreement == 1.0
    assert bool(crops.flatten(1).any(1).all())  # brain-centred crops all hold brain


def test_a_share_of_crops_is_centred_on_brain(trainer):
    images = torch.from_numpy(trainer.train_set.images)[:, None]
    masks = torch.from_numpy(trainer.train_set.masks)[:, None].float()
    brainy = torch.from_numpy(np.flatnonzero(trainer.train_set.masks.reshape(len(masks), -1).sum(1) > 200))[:64]
    points = [trainer.train_points[i] for i in brainy.tolist()]

    def brain_fraction(share):
        settings = AugmentSettings(crop_size=96, brain_share=share)
        _, crops = training_batch(images[brainy], masks[brainy], points, settings, torch.Generator().manual_seed(1))
        return float(crops.flatten(1).any(1).float().mean())

    assert brain_fraction(1.0) == 1.0
    assert brain_fraction(0.0) < 0.8  # random 96^2 views of 256^2 slices often miss the brain


def test_intensity_augmentation_strong_darkens_some_of_the_brain():
    generator = torch.Generator().manual_seed(0)
    flat = torch.ones(32, 1, 64, 64)
    from FetalBrainSegLib.training.augment import _signal_dropout

    darkened = _signal_dropout(flat, generator)
    assert float(darkened.min()) < 0.5 and float(darkened.max()) <= 1.0
    assert 0.3 < float((darkened.flatten(1).min(1).values < 0.9).float().mean()) < 1.0  # about half of the images
    with pytest.raises(ValueError, match="intensity augmentation"):
        AugmentSettings(intensity="extreme")


def test_a_field_of_view_cut_zeroes_image_and_mask_outside_a_box_inside_the_signal(trainer):
    """A chosen slice keeps a box within its signal (each side in by at most 30% of the signal's extent),
    zero outside in image and mask alike; the others are untouched. Real slices' masks and signal boxes
    (the images are their signal's bounding box filled with ones, so the kept box shows exactly)."""
    from FetalBrainSegLib.training.augment import field_of_view_cut

    brainy = np.flatnonzero(trainer.train_set.masks.reshape(len(trainer.train_set.masks), -1).sum(1) > 200)[:32]
    masks = torch.from_numpy(trainer.train_set.masks[brainy])[:, None].float()
    images = torch.zeros_like(masks)
    for image, real in zip(images[:, 0], trainer.train_set.images[brainy]):
        rows, cols = np.flatnonzero((real != 0).any(1)), np.flatnonzero((real != 0).any(0))
        image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1.0
    cut_images, cut_masks = field_of_view_cut(
        images, masks, AugmentSettings(fov_cut=0.5), torch.Generator().manual_seed(0)
    )
    changed = (cut_images != images).flatten(1).any(1)
    assert 0.2 < float(changed.float().mean()) < 0.8  # about half the slices
    for before, after, mask_after in zip(images[changed, 0], cut_images[changed, 0], cut_masks[changed, 0]):
        rows, cols = np.flatnonzero((before != 0).any(1)), np.flatnonzero((before != 0).any(0))
        kept_rows, kept_cols = np.flatnonzero((after != 0).any(1)), np.flatnonzero((after != 0).any(0))
        for full, kept in ((rows, kept_rows), (cols, kept_cols)):
            extent = full[-1] - full[0] + 1
            assert kept[0] >= full[0] and kept[-1] <= full[-1]
            assert kept[0] - full[0] <= 0.3 * extent + 1 and full[-1] - kept[-1] <= 0.3 * extent + 1
        box = torch.zeros_like(before, dtype=torch.bool)
        box[kept_rows[0] : kept_rows[-1] + 1, kept_cols[0] : kept_cols[-1] + 1] = True
        assert torch.equal(after, torch.where(box, before, 0)) and not bool(mask_after[~box].any())
    assert torch.equal(cut_images[~changed], images[~changed]) and torch.equal(cut_masks[~changed], masks[~changed])
    with pytest.raises(ValueError, match="smaller field of view"):
        AugmentSettings(fov_cut=1.5)


@pytest.fixture(scope="module")
def trainer(manifest_path, tmp_path_factory):
    config = TrainConfig(
        manifest=str(manifest_path),
        model_options={"norm": "batch"},
        out_dir=str(tmp_path_factory.mktemp("run")),
        steps=2,
        val_stacks=VAL,
        device="cpu",
    )
    return Trainer(config, log=lambda line: None)


def test_stacks_are_split_by_name(trainer, manifest):
    assert trainer.val_names == list(VAL)
    assert not set(trainer.train_names) & set(VAL)
    labelled_t2w = {r.name for r in manifest if r.split == "train" and r.mask and r.modality == "T2W"}
    assert set(trainer.train_names) == labelled_t2w - set(VAL)
    assert [s.record.name for s in trainer.val_stacks] == list(VAL) and len(trainer.train_set.images) == len(
        trainer.train_set.keys
    )
    assert {name for name, _ in trainer.train_set.keys} == set(trainer.train_names)


def test_a_few_steps_on_real_slices_lower_the_loss(trainer):
    torch.manual_seed(0)
    brainy = np.flatnonzero(trainer.train_set.masks.any(axis=(1, 2)))[::25][:8]
    images = torch.from_numpy(trainer.train_set.images[brainy])[:, None]
    masks = torch.from_numpy(trainer.train_set.masks[brainy])[:, None].float()
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-3
    losses = [trainer.train_step(images, masks) for _ in range(8)]
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.01, losses  # falls at every step


def test_a_run_checkpoints_and_resumes_where_it_stopped(small_manifest, tmp_path):
    config = TrainConfig(manifest=str(small_manifest), out_dir=str(tmp_path), steps=2, val_stacks=VAL, device="cpu")
    first = Trainer(config, log=lambda line: None)
    first.run(progress=False)
    assert first.step == 2 and (tmp_path / "checkpoint.pt").is_file()
    model, meta = load_weights(tmp_path / "best.pt")
    assert meta["training"]["val_stacks"] == list(VAL) and meta["preprocessing"]["pixel_size_mm"] == 1.2

    config.steps = 3
    second = Trainer(config, log=lambda line: None)
    second.resume()
    assert second.step == 2 and second.epoch == 1 and len(second.history) == 1
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value)
    torch.testing.assert_close(second.generator.get_state(), first.generator.get_state())
    second.run(progress=False)
    assert second.step == 3 and [h["epoch"] for h in second.history] == [1, 2]
    assert (tmp_path / "train.log").read_text().count("\n") == 2
    last, last_meta = load_weights(tmp_path / "last.pt")  # the last epoch's validated weights, best or not
    assert last_meta["training"]["step"] == 3
    for name, value in second.validated_model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            torch.testing.assert_close(last.state_dict()[name], value)


def test_fine_tuning_starts_from_the_given_weights_records_their_lineage_and_refuses_another_network(
    small_manifest, tmp_path
):
    from FetalBrainSegLib.resources import default_weights_path

    config = TrainConfig(
        manifest=str(small_manifest),
        out_dir=str(tmp_path),
        model_options={"norm": "batch"},
        init=str(default_weights_path()),
        steps=1,
        val_stacks=VAL,
        device="cpu",
    )
    shipped, shipped_meta = load_weights(default_weights_path())
    trainer = Trainer(config, log=lambda line: None)
    for name, value in shipped.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value)
    trainer.run(progress=False)
    _, tuned_meta = load_weights(tmp_path / "best.pt")
    assert tuned_meta["training"]["init_training"] == shipped_meta["training"]
    config.model_options = {}
    with pytest.raises(ValueError, match="holds rfbsnet"):
        Trainer(config, log=lambda line: None)


def test_a_fine_tune_with_frozen_modules_leaves_their_weights_and_statistics_bit_for_bit(small_manifest, tmp_path):
    """--freeze: the frozen parts of the shipped weights come out unchanged (so the committed weights files
    change little), while the rest learns."""
    from FetalBrainSegLib.resources import default_weights_path

    frozen = ("bottleneck", "decoders.0", "encoders.2")
    config = TrainConfig(
        manifest=str(small_manifest),
        out_dir=str(tmp_path),
        model_options={"norm": "batch"},
        init=str(default_weights_path()),
        frozen=frozen,
        steps=2,
        crop_size=64,
        val_stacks=VAL,
        device="cpu",
    )
    shipped = load_weights(default_weights_path())[0].state_dict()
    Trainer(config, log=lambda line: None).run(progress=False)
    tuned = load_weights(tmp_path / "last.pt")[0].state_dict()
    unchanged = {name for name in shipped if torch.equal(shipped[name], tuned[name])}
    in_frozen = {name for name in shipped if name.startswith(tuple(f"{m}." for m in frozen))}
    assert in_frozen and in_frozen <= unchanged
    assert any(name.endswith("running_mean") for name in in_frozen)
    assert not any(
        torch.equal(shipped[n], tuned[n]) for n in shipped if n.endswith("running_mean") and n not in in_frozen
    )
    with pytest.raises(ValueError, match="no sub-module 'decoder' to freeze .*decoders"):
        Trainer(TrainConfig(**{**config.__dict__, "frozen": ("decoder",)}), log=lambda line: None)


def test_epochs_of_set_steps_and_a_time_limit_that_stops_at_an_epoch_end(small_manifest, tmp_path):
    config = TrainConfig(
        manifest=str(small_manifest),
        out_dir=str(tmp_path),
        steps=6,
        epoch_steps=2,
        time_limit_minutes=1e-9,
        val_stacks=VAL,
        device="cpu",
    )
    lines = []
    trainer = Trainer(config, log=lines.append)
    batches = trainer.epoch_batches(5)  # fewer slices than one batch: several shuffled passes fill it
    assert [len(b) for b in batches] == [8, 8] and set(torch.cat(batches).tolist()) == set(range(5))

    trainer.run(progress=False)
    assert trainer.step == 2 and trainer.epoch == 1 and "time limit" in lines[-1]
    config.time_limit_minutes = 0
    resumed = Trainer(config, log=lines.append)
    resumed.resume()
    resumed.run(progress=False)
    assert resumed.step == 6 and [h["step"] for h in resumed.history] == [2, 4, 6]


def test_validation_can_weigh_heads_presented_smaller_or_larger(manifest, small_manifest, tmp_path, capsys):
    """--val-head-sizes: an epoch that gains on the stacks as they are by losing small heads is not kept
    (a GPU fine-tune of 2026-11-26 did that: docs/results/gpu_h200/README.md)."""
    from FetalBrainSegLib.resources import default_weights_path

    model, meta = load_weights(default_weights_path())
    # a whole T2W stack (5 slices) whose brain the weights find (Dice 0.62), presented with heads far smaller
    stacks = load_validation([r for r in manifest if r.name == VAL[0]])
    pixel = meta["preprocessing"]["pixel_size_mm"]
    as_is = validate(model, stacks, torch.device("cpu"), pixel)["T2W"]
    same = validate(model, stacks, torch.device("cpu"), pixel, head_sizes=(1.0,))["T2W"]
    tiny = validate(model, stacks, torch.device("cpu"), pixel, head_sizes=(0.15,))["T2W"]
    assert "dice_brain_sizes" not in as_is and same["dice_brain_sizes"] == pytest.approx(as_is["dice_brain"])
    assert (
        as_is["dice_brain"] > 0.5 and tiny["dice_brain_sizes"] < as_is["dice_brain"] - 0.3
    )  # far smaller than any fetal brain
    assert validation_score({"T2W": as_is}) == as_is["dice_all"]
    assert validation_score({"T2W": tiny}) == pytest.approx((tiny["dice_all"] + tiny["dice_brain_sizes"]) / 2)

    from FetalBrainSegLib.cli import main

    common = ["train", "--manifest", str(small_manifest), "--steps", "1", "--crop-size", "64", "--val-stacks", VAL[0]]
    assert main([*common, "--quiet", "--val-head-sizes", "0.8", "-o", str(tmp_path)]) == 0
    assert "other head sizes" in capsys.readouterr().out
    assert "dice_brain_sizes" in load_weights(tmp_path / "best.pt")[1]["training"]["val"]["T2W"]
    assert main([*common, "--val-head-sizes", "0", "-o", str(tmp_path / "never")]) != 0
    assert "validation head sizes must be positive" in capsys.readouterr().err


def test_fine_tuning_holds_out_the_stacks_its_starting_weights_were_validated_on(small_manifest, manifest, tmp_path):
    from FetalBrainSegLib.cli import main
    from FetalBrainSegLib.engine.weights_record import validation_stacks
    from FetalBrainSegLib.resources import default_weights_path

    shipped = validation_stacks(default_weights_path())
    labelled_train = {r.name for r in manifest if r.split == "train" and r.mask}
    trained_on = load_weights(default_weights_path())[1]["training"]["train_stacks"]
    assert set(shipped) <= labelled_train and not set(shipped) & set(trained_on)

    common = ["--manifest", str(small_manifest), "--steps", "1", "--batch-size", "4", "--crop-size", "64", "--quiet"]
    held_out = sorted([VAL[0], "e2mip_training_0005"])  # two of four: never the default 15% split
    assert main(["train", *common, "-o", str(tmp_path / "first"), "--val-stacks", *held_out]) == 0
    first = tmp_path / "first" / "best.pt"
    assert (
        main(["train", *common, "-o", str(tmp_path / "tuned"), "--init", str(first), "--val-stacks-from", str(first)])
        == 0
    )
    assert load_weights(tmp_path / "tuned" / "best.pt")[1]["training"]["val_stacks"] == held_out
    with pytest.raises(SystemExit):  # one way to choose them, not two
        main(["train", *common, "-o", str(tmp_path / "x"), "--val-stacks", *VAL, "--val-stacks-from", str(first)])


def test_measurements_score_the_test_split_or_the_validation_stacks_recorded_in_the_weights(manifest):
    from FetalBrainSegLib.engine.weights_record import validation_stacks
    from FetalBrainSegLib.evaluation.dataset import held_out
    from FetalBrainSegLib.resources import default_weights_path

    weights = default_weights_path()
    test = held_out(manifest, "test", weights)
    validation = held_out(manifest, "validation", weights)
    assert test and all(r.split == "test" and r.mask for r in test)
    assert sorted(r.name for r in validation) == sorted(validation_stacks(weights))
    assert all(r.split == "train" and r.mask for r in validation)
    with pytest.raises(ValueError, match="test.*validation"):
        held_out(manifest, "train", weights)
    with pytest.raises(ValueError, match="none of the validation stacks"):
        held_out([r for r in manifest if r.split == "test"], "validation", weights)


# Training on several processes (issue 14): a small manifest of the shared data, so that each rank loads little.
RANK_PROBE = """
import json, sys
import torch
from FetalBrainSegLib.training.config import TrainConfig
from FetalBrainSegLib.training.trainer import Trainer

trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])), log=lambda line: None)
images = torch.from_numpy(trainer.train_set.images)[:, None]
masks = torch.from_numpy(trainer.train_set.masks)[:, None].float()
seen, weights = [], []
for index in trainer.epoch_batches(len(images))[:3]:
    trainer.train_step(*trainer.batch(index, images, masks))
    seen.append(index.tolist())
    weights.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()])[::997].tolist())
json.dump({"seen": seen, "weights": weights}, open(sys.argv[2], "w"))
"""


@pytest.fixture
def small_manifest(manifest_path, tmp_path):
    """Three T2W train stacks and one to validate on, with the shared images and masks in place."""
    names = {"e2mip_training_0003", "e2mip_training_0004", "e2mip_training_0005", VAL[0]}
    return subset_manifest(manifest_path, lambda row: row["name"] in names, tmp_path / "data")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_train_on_different_slices_and_keep_identical_weights(small_manifest, tmp_path):
    """What torchrun sets up, by hand: two gloo processes; each trains three steps on its own share."""
    import json
    import os
    import subprocess
    import sys

    config = {"manifest": str(small_manifest), "out_dir": str(tmp_path / "run"), "val_stacks": VAL, "device": "cpu"}
    config |= {"batch_size": 4, "crop_size": 64}
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_PROBE, json.dumps(config), str(tmp_path / f"rank{r}.json")],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(2)
    ]
    assert [rank.wait(timeout=300) for rank in ranks] == [0, 0]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for mine, theirs in zip(first["seen"], second["seen"]):
        assert len(mine) == len(theirs) == 4 and not set(mine) & set(theirs)  # each rank its own slices
    assert len(set(sum(first["seen"] + second["seen"], []))) == 24  # none seen twice in the epoch
    assert first["weights"] == second["weights"]  # gradients averaged: the same weights after every step
    assert first["weights"][0] != first["weights"][-1]  # and they did change


def test_train_under_torchrun_and_resume_in_one_process(small_manifest, tmp_path):
    import json
    import subprocess
    import sys

    options = ["--manifest", small_manifest, "-o", tmp_path / "run", "--val-stacks", *VAL, "--device", "cpu"]
    options += ["--batch-size", "4", "--crop-size", "64", "--epoch-steps", "2", "--quiet"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*launcher, "-m", "FetalBrainSegLib", "train", *map(str, options), "--steps", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("best validation Dice") == 1  # rank 0 alone reports
    log = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4]  # one log, written by rank 0
    assert load_weights(tmp_path / "run" / "best.pt")[1]["training"]["processes"] == 2

    one = subprocess.run(
        [sys.executable, "-m", "FetalBrainSegLib", "train", *map(str, options), "--steps", "6", "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    log = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4, 6]


def test_l2sp_pulls_the_trained_weights_back_toward_where_they_started(small_manifest, tmp_path):
    """L2-SP (training/l2sp.py): the penalty is weight x the squared distance from the starting weights, over the
    trained parameters only, and its gradient points back to them; without starting weights it is refused."""
    from FetalBrainSegLib.training.l2sp import StartingPointPenalty

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 1))
    model[1].requires_grad_(False)
    penalty = StartingPointPenalty(model, weight=0.5)
    assert float(penalty(model)) == 0.0
    with torch.no_grad():
        model[0].weight += 0.1
        model[1].weight += 5.0  # frozen: cannot move in training, so not counted
    moved = penalty(model)
    assert float(moved) == pytest.approx(0.5 * 0.1**2 * model[0].weight.numel(), rel=1e-4)
    moved.backward()
    assert torch.allclose(model[0].weight.grad, torch.full_like(model[0].weight, 0.1), atol=1e-5)
    with pytest.raises(ValueError, match="0 or more"):
        StartingPointPenalty(model, weight=-1)
    config = TrainConfig(manifest=str(small_manifest), out_dir=str(tmp_path), l2sp=0.01, val_stacks=VAL, device="cpu")
    with pytest.raises(ValueError, match="L2-SP pulls toward starting weights: give them with --init"):
        Trainer(config, log=lambda line: None)
