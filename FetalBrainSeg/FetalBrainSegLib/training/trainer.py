"""Training: Adam, lr 1e-4 x 0.9 every 2000 steps, batch 8, as the paper; on crops, with Dice (+ cross-entropy).

The paper trains on whole 256^2 slices with a Dice loss. The network is fully
convolutional, so steps here take augmented crops (160^2 by default: 192 mm, more than
any fetal head), a third of them centred near brain: about 2.5x the slices per second
(weights/README.md). Slices are resampled to the network grid once, at the start.
Validation runs on whole slices, as inference does.

Stacks are split by name (never slices of one stack on both sides). Every epoch (a pass over
the training slices, or `epoch_steps` steps) ends with a validation pass and a checkpoint from
which `resume` continues exactly, RNG included; a time limit stops a run at an epoch end.
On a GPU the training slices live on the device and are augmented there.
The best epoch by mean validation Dice over the training modalities is saved as a weights file
(with `val_head_sizes`, heads presented larger and smaller count too: `validation_score`).

Under torchrun (ranks.py) every process trains a DistributedDataParallel copy: one shuffled order
of the slices, shared by all ranks, is dealt out so that each rank trains on its own share, with
its own augmentation; gradients are averaged, so the weights stay identical. Rank 0 alone
validates, checkpoints and logs; a checkpoint resumes with any number of processes, one included.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..engine.stack import slice_axis
from ..engine.volume_io import Volume
from ..evaluation.dataset import StackRecord, load_slices, read_labelled, read_manifest, select
from ..evaluation.scores import score_stack, summarize
from ..models.registry import build_model
from ..models.torch_runtime import fast_layout, resolve_device
from ..models.weights import load_weights, save_weights
from ..progress import ProgressBar
from ..provenance import provenance
from .augment import AugmentSettings, brain_points, training_batch
from .config import LOSSES, TrainConfig
from .l2sp import StartingPointPenalty
from .ranks import join_process_group, main_rank_says


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the brain class over the whole batch.

    Brain only: averaging in the background class (98% of pixels) made predicting
    nothing a good answer, and training collapsed there. False positives on brain-free
    slices still cost, through the predicted volume in the denominator.
    """
    brain = torch.softmax(logits.float(), dim=1)[:, 1:]
    overlap = (brain * target).sum()
    return 1 - (2 * overlap + 1) / (brain.sum() + target.sum() + 1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """`dice`, or `dice_ce`: Dice plus pixel-wise cross-entropy, which keeps teaching where
    Dice's gradient is flat (small brain sections on end slices, brain-free views)."""
    loss = dice_loss(logits, target)
    if name == "dice_ce":
        loss = loss + F.cross_entropy(logits.float(), target[:, 0].long())
    elif name != "dice":
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {name!r}")
    return loss


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


@dataclass
class ValidationStack:
    record: StackRecord
    volume: Volume
    truth: np.ndarray  # the manual mask on the volume's grid


def load_validation(records: list[StackRecord]) -> list[ValidationStack]:
    stacks = []
    for record in records:
        stacks.append(ValidationStack(record, *read_labelled(record)))
    return stacks


def validate(
    model: torch.nn.Module,
    stacks: list[ValidationStack],
    device: torch.device,
    pixel_size: float,
    head_sizes: tuple[float, ...] = (),
    batch_size: int = 16,
) -> dict:
    """Per-slice Dice as users get the masks: whole stacks through the Segmenter (original voxel grid,
    default post-processing): mean over all slices, over brain slices, and brain-free slices left empty.
    With `head_sizes`, each stack is also presented with its head that many times as large
    (evaluation/head_size.py): "dice_brain_sizes" is the mean Dice over their brain slices."""
    from ..engine.backends import TorchBackend
    from ..engine.inference import Segmenter
    from ..evaluation.head_size import head_scaled

    model.eval()
    backend = TorchBackend(None, str(device), model, {"preprocessing": {"pixel_size_mm": pixel_size}})
    segmenter = Segmenter(backend=backend, batch_size=batch_size)
    scores, sized = [], []
    for stack in stacks:
        name, modality = stack.record.name, stack.record.modality
        result = segmenter.segment(stack.volume, name)
        scores += score_stack(result.mask, stack.truth, result.slice_axis, name, modality)
        for scale in head_sizes:
            result = segmenter.segment(head_scaled(stack.volume, scale), name)
            sized += score_stack(result.mask, stack.truth, result.slice_axis, name, modality)
    model.train()
    report = {}
    for modality in dict.fromkeys(s.modality for s in scores):
        summary = summarize([s for s in scores if s.modality == modality])
        report[modality] = {
            "dice_all": summary["aDice"],
            "dice_brain": summary["aDice_brain"],
            "empty_correct": summary["empty_predicted_empty"],
        }
        if head_sizes:
            other_sizes = summarize([s for s in sized if s.modality == modality])
            report[modality]["dice_brain_sizes"] = other_sizes["aDice_brain"]
    return report


def freeze(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    """The named sub-modules (e.g. "bottleneck", "decoders.0"), left as they are by training: their weights
    take no gradient and their batch-norm statistics stay fixed (eval mode), so their tensors, and those of
    the ONNX and INT8 models exported from them, come out bit for bit the same. A fine-tune that trains the
    small layers only is then a small change to the committed weights files (weights/README.md)."""
    modules = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise ValueError(f"the network has no sub-module {name!r} to freeze (its parts: {children})") from None
        module.requires_grad_(False)
        modules.append(module)
    return modules


def validation_score(report: dict) -> float:
    """What the best epoch maximizes: mean Dice over all slices, averaged over the modalities; where heads of
    other sizes were validated, each modality's score is the mean of that and their brain-slice Dice, so
    an epoch that gains on the stacks as they are by losing small or large heads is not kept."""
    return float(np.mean([np.mean([v["dice_all"], v.get("dice_brain_sizes", v["dice_all"])]) for v in report.values()]))


class Trainer:
    def __init__(self, config: TrainConfig, log=print):
        self.config = config
        self.ranks, self.device = join_process_group(resolve_device(config.device))
        self.log = log if self.ranks.is_main else (lambda line: None)
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
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
        self.val_stacks = load_validation([r for r in records if r.name in val_names]) if self.ranks.is_main else []
        self.train_points = brain_points(self.train_set.masks, config.seed)
        self.augmentation = AugmentSettings(
            config.crop_size, config.brain_crop_share, tuple(config.scale_range), config.intensity, config.fov_cut
        )
        segmentation_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1), config.loss)  # an unknown name fails now
        if any(scale <= 0 for scale in config.val_head_sizes):
            raise ValueError(f"validation head sizes must be positive, not {list(config.val_head_sizes)}")
        torch.manual_seed(config.seed)
        self.model = self._initial_model()
        self.model = fast_layout(self.model)
        self.frozen = freeze(self.model, tuple(config.frozen))  # before DDP, which syncs the trained weights only
        if config.l2sp and not config.init:
            raise ValueError("L2-SP pulls toward starting weights: give them with --init")
        self.penalty = StartingPointPenalty(self.model, config.l2sp) if config.l2sp else None
        self.net = self.model  # what a step runs: under torchrun, the model wrapped for gradient averaging
        if self.ranks.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.ema = (
            torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
            )
            if config.ema_decay
            else None
        )
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_steps, config.lr_decay)
        self.order_generator = torch.Generator().manual_seed(config.seed)  # the same on every rank
        self.generator = self._augmentation_generator(0)  # each rank its own
        self.step = 0
        self.epoch = 0
        self.best_score = -1.0
        self.history: list[dict] = []
        self.provenance = provenance()

    def _initial_model(self) -> torch.nn.Module:
        cfg = self.config
        self.init_training = None  # the starting weights' own training record, kept as the lineage
        if not cfg.init:
            return build_model(cfg.model, **cfg.model_options).to(self.device)
        model, meta = load_weights(cfg.init)
        self.init_training = meta.get("training")
        if meta["model"] != cfg.model.lower() or meta["model_options"] != dict(cfg.model_options):
            raise ValueError(
                f"{cfg.init} holds {meta['model']} {meta['model_options']}, not {cfg.model} {dict(cfg.model_options)}"
            )
        if float(meta["preprocessing"]["pixel_size_mm"]) != cfg.pixel_size:
            raise ValueError(
                f"{cfg.init} was trained at {meta['preprocessing']['pixel_size_mm']} mm pixels, not {cfg.pixel_size}"
            )
        return model.to(self.device)

    def _augmentation_generator(self, step: int) -> torch.Generator:
        if self.ranks.rank == 0:
            return torch.Generator().manual_seed(self.config.seed)
        return torch.Generator().manual_seed(hash((self.config.seed, self.ranks.rank, step)) % 2**63)

    @property
    def validated_model(self) -> torch.nn.Module:
        """What is validated and saved: the moving average of the weights, smoother than the last step's."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def best_weights_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def last_weights_path(self) -> Path:
        """The last epoch's validated weights: what a recipe has taught by the end, where best.pt
        may come from its first epochs."""
        return self.out / "last.pt"

    def save_checkpoint(self) -> None:
        state = {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "order_generator": self.order_generator.get_state(),
            "step": self.step,
            "epoch": self.epoch,
            "best_score": self.best_score,
            "history": self.history,
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def resume(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = state["step"], state["epoch"]
        if self.ranks.rank == 0:  # one process continues exactly; other ranks draw their own from here
            self.generator.set_state(state["generator"].cpu())  # map_location moved it to the device
        else:
            self.generator = self._augmentation_generator(self.step)
        if "order_generator" in state:
            self.order_generator.set_state(state["order_generator"].cpu())
        self.best_score, self.history = state["best_score"], state["history"]
        self.log(f"resumed from {self.checkpoint_path} at step {self.step}, epoch {self.epoch}")

    def batch(self, index: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The crops one step trains on, from training slices `index` (whole slices on the network grid)."""
        points = [self.train_points[i] for i in index.tolist()]
        return training_batch(
            images[index], masks[index], points, self.augmentation, self.generator, augment=self.config.augment
        )

    def epoch_batches(self, count: int) -> list[torch.Tensor]:
        """Slice indices of this rank's steps in one epoch: shuffled passes over the `count` training
        slices, dealt out over the ranks (each rank `batch_size` slices a step)."""
        size, steps, world = self.config.batch_size, self.config.epoch_steps, self.ranks.world
        passes = -(-steps * size * world // count) if steps else 1
        order = torch.cat([torch.randperm(count, generator=self.order_generator) for _ in range(passes)])
        mine = order[self.ranks.rank :: world]
        if not steps:  # one pass: every rank takes the same number of steps, so none waits for a missing one
            steps = -(-(len(order) // world) // size)
        return [mine[i : i + size] for i in range(0, len(mine), size)][:steps]

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        images = fast_layout(images.to(self.device))
        masks = masks.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(images)
        loss = segmentation_loss(logits, masks, self.config.loss)
        if self.penalty is not None:
            loss = loss + self.penalty(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return float(loss.detach())

    def _finish_epoch(self, loss: float, seconds: float) -> None:
        """Rank 0's end of an epoch: validate, keep the best and the last weights, checkpoint, log."""
        cfg = self.config
        report = validate(self.validated_model, self.val_stacks, self.device, cfg.pixel_size, tuple(cfg.val_head_sizes))
        score = validation_score(report)
        improved = score > self.best_score
        entry = {
            "epoch": self.epoch,
            "step": self.step,
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": seconds,
            "val": report,
        }
        self.history.append(entry)
        training = {
            "epoch": self.epoch,
            "step": self.step,
            "val": report,
            "val_stacks": self.val_names,
            "train_stacks": self.train_names,
            "config": asdict(cfg),
            "processes": self.ranks.world,
            **self.provenance,
            **({"init_training": self.init_training} if self.init_training else {}),
        }
        paths = [self.last_weights_path] + ([self.best_weights_path] if improved else [])
        for path in paths:
            save_weights(path, self.validated_model, cfg.model, cfg.model_options, cfg.pixel_size, training)
        if improved:
            self.best_score = score
        self.save_checkpoint()
        with (self.out / "train.log").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.log(
            f"epoch {self.epoch} step {self.step} loss {loss:.4f} "
            + " ".join(
                f"{m}: dice {v['dice_all']:.4f} brain {v['dice_brain']:.4f} empty-ok {v['empty_correct']:.2f}"
                + (f" other head sizes {v['dice_brain_sizes']:.4f}" if "dice_brain_sizes" in v else "")
                for m, v in report.items()
            )
            + f" ({seconds:.0f} s){' *best*' if improved else ''}"
        )

    def _training_mode(self) -> None:
        self.model.train()
        for module in self.frozen:
            module.eval()

    def run(self, progress: bool = True) -> dict:
        cfg = self.config
        val_slices = sum(s.volume.data.shape[slice_axis(s.volume.affine)] for s in self.val_stacks)
        self.log(
            f"training {cfg.model} on {len(self.train_names)} stacks ({len(self.train_set.images)} slices), "
            f"validating on {', '.join(self.val_names)} ({val_slices} slices); "
            f"device {self.device}, {'bf16 autocast' if self.bf16 else 'fp32'}"
        )
        images = torch.from_numpy(self.train_set.images)[:, None].to(self.device)
        masks = torch.from_numpy(self.train_set.masks)[:, None].float().to(self.device)
        self._training_mode()
        run_start = time.perf_counter()
        while self.step < cfg.steps:
            start, losses = time.perf_counter(), []
            batches = self.epoch_batches(len(images))[: cfg.steps - self.step]
            bar = ProgressBar(len(batches), f"epoch {self.epoch + 1}", "step", enabled=progress and self.ranks.is_main)
            for index in batches:
                losses.append(self.train_step(*self.batch(index, images, masks)))
                bar.update(1, f"loss {losses[-1]:.4f}")
            self.epoch += 1
            if self.ranks.is_main:
                self._finish_epoch(float(np.mean(losses)), time.perf_counter() - start)
                self._training_mode()  # validating may have switched the frozen batch norms back
            if not cfg.time_limit_minutes:
                continue
            out_of_time = time.perf_counter() - run_start > 60 * cfg.time_limit_minutes
            if main_rank_says(out_of_time, self.ranks, self.device):  # all ranks stop together
                self.log(
                    f"time limit of {cfg.time_limit_minutes:g} min reached at step {self.step}; --resume continues"
                )
                break
        return {"best_score": self.best_score, "best_weights": str(self.best_weights_path), "steps": self.step}
