"""A training run's and a site adaptation's settings, importable without PyTorch, each declared once (settings.py:
the command line's options are built from these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.input_grid import DEFAULT_PIXEL_SIZE_MM
from ..settings import setting

LOSSES = ("dice", "dice_ce")
INTENSITY_SETTINGS = ("standard", "strong")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_HELP = "auto (CUDA when present), cpu or cuda (default: %(default)s)"


@dataclass
class TrainConfig:
    manifest: str
    out_dir: str
    model: str = setting("rfbsnet", "network of the registry (default: %(default)s)")
    modalities: tuple[str, ...] = setting(
        ("T2W",),
        "modalities to train on; the best epoch has the highest mean validation Dice over them (default: %(default)s)",
    )
    steps: int = setting(10000, "optimizer steps in all (default: %(default)s)")
    batch_size: int = setting(8, "crops per step (default: %(default)s)")
    lr: float = setting(1e-4, "Adam learning rate at the start (default: %(default)s)")
    lr_decay: float = setting(0.9, "factor applied to the learning rate every --lr-decay-steps (default: %(default)s)")
    lr_decay_steps: int = setting(2000, "steps between learning-rate decays (default: %(default)s)")
    # empty: ~15% of each modality's train stacks, seeded (the command line offers it beside --val-stacks-from)
    val_stacks: tuple[str, ...] = ()
    val_head_sizes: tuple[float, ...] = setting(
        (),
        "also validate each stack with its head presented SCALE times as large (e.g. 0.6 0.8 1.25 1.5); the best "
        "epoch then weighs them equally with the stacks as they are (default: none; trainer.py)",
        metavar="SCALE",
        type=float,
    )
    seed: int = setting(0, "seed of every random choice (default: %(default)s)")
    device: str = setting("auto", DEVICE_HELP)
    precision: str = setting(
        "auto", "auto: bf16 autocast where the hardware has native bf16 (default: %(default)s)", choices=PRECISIONS
    )
    pixel_size: float = DEFAULT_PIXEL_SIZE_MM
    augment: bool = setting(True, "plain crops: no rotation, scaling or intensity changes")
    model_options: dict = field(default_factory=dict)  # --model-option KEY=VALUE
    crop_size: int = setting(
        160, "training crop in network pixels; 0 trains on whole slices, as the paper (default: %(default)s)"
    )
    brain_crop_share: float = setting(1 / 3, "share of crops centred near brain (default: %(default).2f)")
    scale_range: tuple[float, float] = setting(
        (0.8, 1.25), "random magnification range (default: %(default)s)", metavar=("LOW", "HIGH"), nargs=2
    )
    intensity: str = setting(
        "standard",
        "intensity augmentation; strong adds dark blobs and speckle (augment.py; default: %(default)s)",
        choices=INTENSITY_SETTINGS,
    )
    fov_cut: float = setting(
        0.0,
        "share of slices cut to a random smaller field of view, as a tightly cropped stack is (augment.py; "
        "default: %(default)s)",
        metavar="SHARE",
    )
    loss: str = setting("dice_ce", "training loss (default: %(default)s)", choices=LOSSES)
    init: str = setting(
        "", "start from these weights (fine-tuning; default: none, a random initialization)", metavar="WEIGHTS"
    )
    frozen: tuple[str, ...] = setting(
        (),
        "sub-modules of the network left as they are, e.g. bottleneck decoders.0: a fine-tune of the rest, whose "
        "change to the committed weights files stays small (trainer.py freeze, weights/README.md; default: none)",
        flag="--freeze",
        metavar="MODULE",
        type=str,
    )
    l2sp: float = setting(
        0.0,
        "L2-SP: add WEIGHT x the squared distance of the weights from --init's to the loss, against forgetting "
        "what the starting weights knew (l2sp.py; default: %(default)s, none)",
        metavar="WEIGHT",
    )
    ema_decay: float = 0.998  # validated and saved: the exponential moving average of the weights (0: none)
    epoch_steps: int = setting(
        0, "steps between validations and checkpoints; 0: one pass over the training slices (default: %(default)s)"
    )
    time_limit_minutes: float = setting(
        0.0,
        "stop at the first epoch end past this wall time; --resume continues (default: %(default)s, none)",
        flag="--time-limit",
        metavar="MINUTES",
    )


# site adaptation (adapt.py): what it leaves frozen, which corrected slices it holds out, what it must gain
ADAPT_FROZEN = ("downsample", "encoders", "bottleneck", "shallow")
HELD_OUT_EVERY = 4
MIN_GAIN = 0.005  # held-out Dice the site model must gain over the base weights to be kept
UNSEEN_STACK_TOLERANCE = 0.005  # Dice a kept step may lose on the corrected stack held out whole
GUARD_VIEWS = 2  # other scanners' looks per corrected brain slice in the brain-finding guard (training/adapt.py)
GUARD_MIN_PIXELS = 20  # on the network grid (29 mm² at 1.2 mm): less is not a brain the base model found
GUARD_KEEP_SHARE = 0.5  # of the base model's brain area on a guard slice, the least a site model may keep


@dataclass
class AdaptSettings:
    name: str
    base: str = setting("", "weights to start from (default: the shipped model)", metavar="WEIGHTS")
    minutes: float = setting(
        8.0, "time budget: it stops at the first step past it, scored and kept if best (default: %(default)s)"
    )
    steps: int = setting(2000, "most steps (default: %(default)s)")
    lr: float = setting(1e-4, "learning rate (default: %(default)s)")
    l2sp: float = setting(1e-3, "pull toward the base weights (l2sp.py; default: %(default)s)")
    frozen: tuple[str, ...] = setting(
        ADAPT_FROZEN,
        "sub-modules left as they are; none with nothing after it (default: %(default)s)",
        flag="--freeze",
        metavar="MODULE",
        nargs="*",
    )
    batch_size: int = 8
    check_every: int = 25  # steps between scores on the held-out slices
    min_gain: float = MIN_GAIN  # below this held-out gain the base weights are kept
    seed: int = 0
    device: str = setting("auto", DEVICE_HELP)
    any_modality: bool = setting(False, "allow corrected stacks of T2W and EPI together (one site model for both)")
