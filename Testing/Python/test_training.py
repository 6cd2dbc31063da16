"""Training smoke tests on real shared slices: the loss goes down, and a run resumes exactly."""

import numpy as np
import pytest
import torch

from FetalBrainSegLib.training import TrainConfig, Trainer, dice_loss
from FetalBrainSegLib.weights import load_weights

VAL = ("e2mip_validation_slice_T2W_vol0005",)


def test_dice_loss_is_zero_for_a_perfect_answer_and_one_for_predicting_nothing():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    perfect = torch.cat([-20 * (target * 2 - 1), 20 * (target * 2 - 1)], dim=1)
    assert float(dice_loss(perfect, target)) == pytest.approx(0, abs=1e-3)
    nothing = torch.cat([torch.full_like(target, 20), torch.full_like(target, -20)], dim=1)
    assert float(dice_loss(nothing, target)) == pytest.approx(1, abs=0.15)


@pytest.fixture(scope="module")
def trainer(manifest_path, tmp_path_factory):
    config = TrainConfig(manifest=str(manifest_path), model_options={"norm": "batch"},
                         out_dir=str(tmp_path_factory.mktemp("run")), steps=2, val_stacks=VAL, device="cpu")
    return Trainer(config, log=lambda line: None)


def test_stacks_are_split_by_name(trainer):
    assert trainer.val_names == list(VAL)
    assert not set(trainer.train_names) & set(VAL)
    assert len(trainer.train_names) == 10 and len(trainer.val_set.images) == 5


def test_a_few_steps_on_real_slices_lower_the_loss(trainer):
    torch.manual_seed(0)
    brainy = np.flatnonzero(trainer.train_set.masks.any(axis=(1, 2)))[:: 25][:8]
    images = torch.from_numpy(trainer.train_set.images[brainy])[:, None]
    masks = torch.from_numpy(trainer.train_set.masks[brainy])[:, None].float()
    trainer.config.augment = False
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-3
    losses = [trainer.train_step(images, masks) for _ in range(8)]
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.01, losses  # falls at every step


def test_a_run_checkpoints_and_resumes_where_it_stopped(manifest_path, tmp_path):
    config = TrainConfig(manifest=str(manifest_path), out_dir=str(tmp_path),
                         steps=2, val_stacks=VAL, device="cpu")
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
