"""Site adaptation: the base weights fine-tuned on a site's own corrected stacks, on its CPU, in minutes.

Users correct masks anyway (Segment Editor, web app); those corrections teach the model the site's
scanner, protocol and way of drawing. Guards, because a fine-tune on two stacks forgets what they do
not show (in a trial, EPI recall fell from 0.99 to 0 after adapting on T2W):
- the early layers are frozen (ADAPT_FROZEN: the downsampling module, the encoders, the bottleneck and
  the shallow branch; a step is about ten times cheaper too), and the rest is pulled toward the base
  weights (L2-SP, training/l2sp.py), at a low learning rate;
- every HELD_OUT_EVERY-th slice of each corrected stack is held out: the steps are scored on them, the
  best is kept, and if it does not beat the base weights there by MIN_GAIN the base weights are kept;
- slices held out of a stack the model trains on flatter it: they neighbour its training slices. Adapting on
  one EPI stack raised its held-out slices by 0.6 points while another stack of that site fell 7 points
  (docs/results/site_adaptation.md). So with two or more corrected stacks, one (the one with the fewest
  slices) is held out whole: a step that loses more than UNSEEN_STACK_TOLERANCE there is never kept;
- a guard inside one site cannot see other sites: with all three of a hospital's stacks corrected, its held-out
  stack lost 0.25 points while the E2MIP T2W test stacks lost brain slices. So every corrected slice with brain
  is also shown as another scanner might show it (GUARD_VIEWS strong appearance changes: bias field, signal
  dropout, speckle, contrast, gain, noise); a step under which any of these that the base model finds brain
  on keeps less than GUARD_KEEP_SHARE of the base's brain area is never kept (the brain-finding guard). Not
  only empty slices: a site model that came out empty on none of them still lost a brain slice of another
  site after post-processing, where it had shrunk them (docs/results/site_adaptation.md). Shrinking is never
  a site's convention being learnt, only brain being lost;
- the site model records the modality it learnt (engine/site_models.py); a stack of another modality is
  segmented with the base weights.
The result is a site model in the user's data folder, never in the repository.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checksums import sha256
from ..engine.site_models import check_new_name, modality_of, site_model_path
from ..engine.stack import Stack
from ..engine.volume_io import VolumeError, read_volume
from ..evaluation.dataset import pad_centred
from ..evaluation.metrics import dice_iou
from ..models.torch_runtime import fast_layout, foreground_probability, resolve_device
from ..models.weights import load_weights, save_weights
from .augment import AugmentSettings, brain_points, intensity, training_batch
from .config import (
    GUARD_KEEP_SHARE,
    GUARD_MIN_PIXELS,
    GUARD_VIEWS,
    HELD_OUT_EVERY,
    MIN_GAIN,
    UNSEEN_STACK_TOLERANCE,
    AdaptSettings,
)
from .l2sp import StartingPointPenalty
from .trainer import freeze, segmentation_loss


class AdaptationCancelled(Exception):
    """Raised when the cancel event is set; nothing is written."""


@dataclass
class AdaptResult:
    kept: bool  # whether the site model was written (it beat the base weights on the held-out slices)
    path: Path | None
    held_out_before: float
    held_out_after: float
    steps: int  # of the kept state
    minutes: float
    modality: str
    # (step, held-out slices' Dice, the unseen stack's Dice or None)
    history: list[tuple[int, float, float | None]] = field(default_factory=list)
    min_gain: float = MIN_GAIN
    unseen: str = ""  # the corrected stack held out whole ("" with one corrected stack)
    unseen_before: float | None = None
    unseen_after: float | None = None  # of the kept step
    lost_brain: list[tuple[int, int]] = field(default_factory=list)  # (step, slices) the brain-finding guard refused

    def summary(self) -> str:
        guard = f" without losing more than {UNSEEN_STACK_TOLERANCE:g} on {self.unseen}" if self.unseen else ""
        verdict = (
            f"site model written: {self.path}"
            if self.kept
            else f"no step beat the base weights by {self.min_gain:g} there{guard}: base weights kept, nothing written"
        )
        unseen = (
            f"; {self.unseen}, held out whole: base {self.unseen_before:.4f}, adapted {self.unseen_after:.4f}"
            if self.unseen
            else ""
        )
        refused = (
            f"; not kept, as they lost brain the base model finds on the corrected slices under another scanner's "
            f"look: step(s) {', '.join(str(step) for step, _ in self.lost_brain)}"
            if self.lost_brain
            else ""
        )
        return (
            f"held-out corrected slices, mean Dice: base {self.held_out_before:.4f}, adapted "
            f"{self.held_out_after:.4f} (step {self.steps}, {self.minutes:.1f} min){unseen}{refused}; {verdict}"
        )


def corrected_slices(pairs: list[tuple[Path, Path]], pixel_size: float):
    """Network-grid images, masks, the held-out flag per slice, a record per stack (name, checksums), the
    modalities, and the index of each slice's stack."""
    images, masks, held_out, stacks, modalities, stack_of = [], [], [], [], set(), []
    for image_path, mask_path in pairs:
        volume, mask = read_volume(image_path), read_volume(mask_path)
        if mask.data.shape != volume.data.shape or not np.allclose(mask.affine, volume.affine, atol=1e-3):
            raise VolumeError(f"{Path(mask_path).name}: not on the grid of {Path(image_path).name}")
        stack = Stack(volume, Path(image_path).name, pixel_size)
        modalities.add(modality_of(min(stack.spacing)))
        truth = np.moveaxis(mask.data > 0, stack.axis, 0)
        if not truth.any():
            raise VolumeError(f"{Path(mask_path).name}: the corrected mask holds no brain")
        images.append(stack.network_input())
        masks.append(stack.to_network(truth) > 0.5)
        held_out += [i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for i in range(stack.num_slices)]
        stack_of += [len(stacks)] * stack.num_slices
        stacks.append({"image": str(image_path), "mask": str(mask_path), "image_sha256": sha256(image_path),
                       "mask_sha256": sha256(mask_path), "slices": stack.num_slices})  # fmt: skip
    side = max(max(i.shape[1:]) for i in images)
    images = np.concatenate([pad_centred(i, (side, side)) for i in images])
    masks = np.concatenate([pad_centred(m, (side, side)) for m in masks]).astype(np.uint8)
    return images, masks, np.array(held_out), stacks, modalities, np.array(stack_of)


def unseen_stack(stacks: list[dict]) -> int | None:
    """The corrected stack held out whole (the one with the fewest slices, the last of equals), or None when
    there is only one."""
    if len(stacks) < 2:
        return None
    return min(reversed(range(len(stacks))), key=lambda k: stacks[k]["slices"])


def predicted_masks(model, images, device) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [foreground_probability(model, images[i : i + 8], device) >= 0.5 for i in range(0, len(images), 8)]
    )


def held_out_dice(model, images, masks, device) -> float:
    """Mean Dice over the held-out slices (an empty answer on a brain-free slice scores 1)."""
    return float(dice_iou(predicted_masks(model, images, device), masks > 0)[0].mean())


def other_looks(images: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    """The corrected slices with brain, each shown GUARD_VIEWS times as another scanner or protocol might show
    it (training's strong intensity changes, seeded): the brain-finding guard's slices."""
    with_brain = torch.from_numpy(images[masks.reshape(len(masks), -1).any(axis=1)])[:, None]
    generator = torch.Generator().manual_seed(seed + 1)
    strong = AugmentSettings(crop_size=0, intensity="strong")
    return torch.cat([intensity(with_brain, strong, generator) for _ in range(GUARD_VIEWS)])[:, 0].numpy()


class BrainFindingGuard:
    """Where the base model finds brain (GUARD_MIN_PIXELS or more) on the guard's slices (other_looks of the
    corrected slices), a site model must keep at least GUARD_KEEP_SHARE of its area: `lost(model)` counts the
    slices where it does not. Built on first use, so a run that never reaches a new best pays nothing for it."""

    def __init__(self, base_model, images: np.ndarray, masks: np.ndarray, seed: int, device):
        self._base = copy.deepcopy(base_model)  # before the first step changes it
        self._images, self._masks, self._seed, self.device = images, masks, seed, device
        self.size = GUARD_VIEWS * int(masks.reshape(len(masks), -1).any(axis=1).sum())
        self._slices = None

    @property
    def slices(self) -> np.ndarray:
        if self._slices is None:
            self._slices = other_looks(self._images, self._masks, self._seed)
            self.base_areas = self._areas(self._base)
            self.found = self.base_areas >= GUARD_MIN_PIXELS
            self._base = None
        return self._slices

    def _areas(self, model) -> np.ndarray:
        return predicted_masks(model, self.slices, self.device).reshape(len(self.slices), -1).sum(axis=1)

    def lost(self, model) -> int:
        areas = self._areas(model)
        return int((self.found & (areas < GUARD_KEEP_SHARE * self.base_areas)).sum())


def adapt(
    pairs: list[tuple[Path, Path]],
    settings: AdaptSettings,
    on_progress: Callable[[int, int, float | None], None] | None = None,
    cancel: threading.Event | None = None,
) -> AdaptResult:
    """Fine-tune the base weights on (stack, corrected mask) pairs into the site model `settings.name`.
    `on_progress(step, steps, held-out Dice or None)` follows the work; setting `cancel` stops it, writing
    nothing. Raises ValueError for settings, VolumeError for files, FileExistsError for a taken name."""
    from ..resources import default_weights_path

    start = time.perf_counter()
    name = check_new_name(settings.name)
    target = site_model_path(name)
    if not pairs:
        raise ValueError("adaptation needs at least one corrected stack")
    base = Path(settings.base) if settings.base else default_weights_path()
    model, metadata = load_weights(base)
    pixel_size = float(metadata["preprocessing"]["pixel_size_mm"])
    images, masks, held_out, stacks, modalities, stack_of = corrected_slices(pairs, pixel_size)
    if len(modalities) > 1 and not settings.any_modality:
        raise ValueError(
            "the corrected stacks are of several modalities (T2W and EPI, by their pixel size); adapt one "
            "modality at a time, or allow it (any_modality)"
        )
    whole = unseen_stack(stacks)
    unseen = stack_of == whole  # all False with one corrected stack
    held_out &= ~unseen
    trains = ~held_out & ~unseen
    if not trains.any() or not held_out.any():
        raise ValueError(f"too few corrected slices: every {HELD_OUT_EVERY}th is held out and the rest trains")
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model = fast_layout(model.to(device))
    frozen = freeze(model, settings.frozen)
    penalty = StartingPointPenalty(model, settings.l2sp) if settings.l2sp else None
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=settings.lr)
    train_images = torch.from_numpy(images[trains])[:, None]
    train_masks = torch.from_numpy(masks[trains])[:, None].float()
    points = brain_points(masks[trains], settings.seed)

    def scores() -> tuple[float, float | None]:
        """Held-out slices' Dice, and the unseen stack's (None without one)."""
        slices = held_out_dice(model, images[held_out], masks[held_out], device)
        return slices, (held_out_dice(model, images[unseen], masks[unseen], device) if unseen.any() else None)

    generator = torch.Generator().manual_seed(settings.seed)
    augmentation = AugmentSettings(crop_size=0)
    guard = BrainFindingGuard(model, images, masks, settings.seed, device)
    lost_brain = []

    before, unseen_before = scores()
    best = (before, 0, unseen_before, {k: v.detach().clone() for k, v in model.state_dict().items()})
    history = [(0, before, unseen_before)]
    if on_progress:
        on_progress(0, settings.steps, before)
    step = 0
    while step < settings.steps:
        model.train()
        for module in frozen:
            module.eval()
        index = torch.randint(len(train_images), (settings.batch_size,), generator=generator)
        batch_images, batch_masks = training_batch(
            train_images[index], train_masks[index], [points[i] for i in index.tolist()], augmentation, generator
        )
        logits = model(fast_layout(batch_images.to(device)))
        loss = segmentation_loss(logits, batch_masks.to(device), "dice_ce")
        if penalty is not None:
            loss = loss + penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if cancel is not None and cancel.is_set():
            raise AdaptationCancelled(f"adaptation cancelled at step {step}; nothing was written")
        score = None
        out_of_time = time.perf_counter() - start > 60 * settings.minutes
        if step % settings.check_every == 0 or step == settings.steps or out_of_time:
            score, unseen_score = scores()
            history.append((step, score, unseen_score))
            safe = unseen_score is None or unseen_score >= unseen_before - UNSEEN_STACK_TOLERANCE
            if score > best[0] and safe:
                lost = guard.lost(model)  # its cost is paid for a new best only
                if lost:
                    lost_brain.append((step, lost))
                else:
                    best = (score, step, unseen_score, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if on_progress:
            on_progress(step, settings.steps, score)
        if out_of_time:  # scored just now: the budget is kept to a step, not to the next check
            break
    minutes = (time.perf_counter() - start) / 60
    after, best_step, unseen_after, state = best
    modality = "/".join(sorted(modalities))
    kept = after >= before + settings.min_gain
    unseen_name = Path(stacks[whole]["image"]).name if whole is not None else ""
    result = AdaptResult(kept, None, before, after, best_step, minutes, modality, history, settings.min_gain,
                         unseen_name, unseen_before, unseen_after, lost_brain)  # fmt: skip
    if not result.kept:
        return result
    model.load_state_dict(state)
    site = {
        "name": name,
        "modality": modality,
        "base": str(base),
        "base_training": metadata.get("training", {}).get("git_revision", ""),
        "stacks": stacks,
        "steps": best_step,
        "minutes": round(minutes, 2),
        "held_out_before": round(before, 4),
        "held_out_after": round(after, 4),
        "unseen_stack": unseen_name,
        "unseen_before": None if unseen_before is None else round(unseen_before, 4),
        "unseen_after": None if unseen_after is None else round(unseen_after, 4),
        "guard_slices": guard.size,
        "lost_brain_refused": lost_brain,  # (step, slices): new bests the brain-finding guard did not keep
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("name",)},
    }
    training = {**metadata.get("training", {}), "site": site}
    from .onnx_export import export_onnx

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / f"{name}.pt"
        save_weights(weights, model.cpu(), metadata["model"], metadata["model_options"], pixel_size, training)
        export_onnx(weights, target)
    result.path = target
    return result
