"""Training per the paper: Dice loss, Adam, lr 1e-4 x 0.9 every 2000 steps, batch 8, 256^2 slices.

Stacks are split by name (never slices of one stack on both sides). Every epoch ends with
a validation pass and a checkpoint from which `resume` continues exactly, RNG included.
The best epoch by validation Dice on the first modality is saved as a weights file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .augment import augment
from .dataset import SliceSet, load_slices, read_manifest, select
from .metrics import dice_iou
from .models import build_model
from .network import foreground_probability, resolve_device
from .progress import ProgressBar
from .provenance import provenance
from .stack import DEFAULT_PIXEL_SIZE_MM
from .weights import save_weights


@dataclass
class TrainConfig:
    manifest: str
    out_dir: str
    model: str = "rfbsnet"
    modalities: tuple[str, ...] = ("T2W",)
    steps: int = 10000
    batch_size: int = 8
    lr: float = 1e-4
    lr_decay: float = 0.9
    lr_decay_steps: int = 2000
    val_stacks: tuple[str, ...] = ()  # empty: ~15% of each modality's train stacks, seeded
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast where the hardware has native bf16, else fp32
    pixel_size: float = DEFAULT_PIXEL_SIZE_MM
    augment: bool = True
    model_options: dict = field(default_factory=dict)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the brain class over the whole batch.

    Brain only: averaging in the background class (98% of pixels) made predicting
    nothing a good answer, and training collapsed there. False positives on brain-free
    slices still cost, through the predicted volume in the denominator.
    """
    brain = torch.softmax(logits.float(), dim=1)[:, 1:]
    overlap = (brain * target).sum()
    return 1 - (2 * overlap + 1) / (brain.sum() + target.sum() + 1)


def split_stacks(names_by_modality: dict[str, list[str]], val_stacks: tuple[str, ...], seed: int) -> set[str]:
    if val_stacks:
        return set(val_stacks)
    rng = np.random.default_rng(seed)
    chosen = set()
    for names in names_by_modality.values():
        count = max(1, round(0.15 * len(names)))
        chosen.update(rng.choice(sorted(names), size=count, replace=False).tolist())
    return chosen


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # private; absent in some builds
        return bool(torch.backends.mkldnn.is_available() and native is not None and native())
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return precision == "bf16"


def validate(model: torch.nn.Module, slices: SliceSet, device: torch.device, batch_size: int = 16) -> dict:
    """Per-slice Dice on the network grid: mean over all slices, over brain slices, empty-slice accuracy."""
    model.eval()
    probs = np.concatenate([foreground_probability(model, slices.images[i : i + batch_size], device)
                            for i in range(0, len(slices.images), batch_size)])
    model.train()
    predicted, truth = probs > 0.5, slices.masks > 0
    dice, _ = dice_iou(predicted, truth)
    report = {}
    for modality in dict.fromkeys(slices.modalities):
        chosen = np.array([m == modality for m in slices.modalities])
        brain = chosen & truth.any(axis=(1, 2))
        empty = chosen & ~truth.any(axis=(1, 2))
        report[modality] = {
            "dice_all": float(dice[chosen].mean()),
            "dice_brain": float(dice[brain].mean()) if brain.any() else float("nan"),
            "empty_correct": float((~predicted[empty].any(axis=(1, 2))).mean()) if empty.any() else float("nan"),
        }
    return report


class Trainer:
    def __init__(self, config: TrainConfig, log=print):
        self.config = config
        self.log = log
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(config.device)
        self.bf16 = use_bf16(config.precision, self.device)
        records = select(read_manifest(config.manifest), "train", tuple(config.modalities))
        by_modality: dict[str, list[str]] = {}
        for record in records:
            by_modality.setdefault(record.modality, []).append(record.name)
        val_names = split_stacks(by_modality, tuple(config.val_stacks), config.seed)
        unknown = val_names - {r.name for r in records}
        if unknown:
            raise ValueError(f"validation stacks not among the training stacks: {', '.join(sorted(unknown))}")
        self.train_names = sorted(r.name for r in records if r.name not in val_names)
        self.val_names = sorted(val_names)
        self.train_set = load_slices([r for r in records if r.name not in val_names], config.pixel_size)
        self.val_set = load_slices([r for r in records if r.name in val_names], config.pixel_size)
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, **config.model_options).to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_steps, config.lr_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.epoch = 0
        self.best_score = -1.0
        self.history: list[dict] = []
        self.provenance = provenance()

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def best_weights_path(self) -> Path:
        return self.out / "best.pt"

    def save_checkpoint(self) -> None:
        state = {"config": asdict(self.config), "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "generator": self.generator.get_state(), "step": self.step, "epoch": self.epoch,
                 "best_score": self.best_score, "history": self.history}
        tmp = self.checkpoint_path.with_suffix(".part")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def resume(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.best_score, self.history = state["best_score"], state["history"]
        self.log(f"resumed from {self.checkpoint_path} at step {self.step}, epoch {self.epoch}")

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        if self.config.augment:
            images, masks = augment(images, masks, self.generator)
        images, masks = images.to(self.device), masks.to(self.device)
        if self.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(images)
        loss = dice_loss(logits, masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def run(self, progress: bool = True) -> dict:
        cfg = self.config
        self.log(f"training {cfg.model} on {len(self.train_names)} stacks ({len(self.train_set.images)} slices), "
                 f"validating on {', '.join(self.val_names)} ({len(self.val_set.images)} slices); "
                 f"device {self.device}, {'bf16 autocast' if self.bf16 else 'fp32'}")
        images = torch.from_numpy(self.train_set.images)[:, None]
        masks = torch.from_numpy(self.train_set.masks)[:, None].float()
        self.model.train()
        while self.step < cfg.steps:
            start, losses = time.perf_counter(), []
            order = torch.randperm(len(images), generator=self.generator)
            batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            batches = batches[: cfg.steps - self.step]
            bar = ProgressBar(len(batches), f"epoch {self.epoch + 1}", "step", enabled=progress)
            for index in batches:
                losses.append(self.train_step(images[index], masks[index]))
                bar.update(1, f"loss {losses[-1]:.4f}")
            self.epoch += 1
            report = validate(self.model, self.val_set, self.device)
            score = report[cfg.modalities[0]]["dice_all"]
            improved = score > self.best_score
            entry = {"epoch": self.epoch, "step": self.step, "loss": float(np.mean(losses)),
                     "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - start, "val": report}
            self.history.append(entry)
            if improved:
                self.best_score = score
                save_weights(self.best_weights_path, self.model, cfg.model, cfg.model_options, cfg.pixel_size,
                             {"epoch": self.epoch, "step": self.step, "val": report, "val_stacks": self.val_names,
                              "train_stacks": self.train_names, "config": asdict(cfg), **self.provenance})
            self.save_checkpoint()
            with (self.out / "train.log").open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
            self.log(f"epoch {self.epoch} step {self.step} loss {entry['loss']:.4f} "
                     + " ".join(f"{m}: dice {v['dice_all']:.4f} brain {v['dice_brain']:.4f} empty-ok {v['empty_correct']:.2f}"
                                for m, v in report.items())
                     + f" ({entry['seconds']:.0f} s){' *best*' if improved else ''}")
        return {"best_score": self.best_score, "best_weights": str(self.best_weights_path), "steps": self.step}
