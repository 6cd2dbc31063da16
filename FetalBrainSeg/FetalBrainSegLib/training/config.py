"""A training run's and a site adaptation's settings, importable without PyTorch (the command line builds its
options from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.input_grid import DEFAULT_PIXEL_SIZE_MM

LOSSES = ("dice", "dice_ce")
INTENSITY_SETTINGS = ("standard", "strong")


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
    val_head_sizes: tuple[float, ...] = ()  # validation heads also presented these times as large (trainer.py)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast where the hardware has native bf16, else fp32
    pixel_size: float = DEFAULT_PIXEL_SIZE_MM
    augment: bool = True
    model_options: dict = field(default_factory=dict)
    crop_size: int = 160  # 0: whole slices, as the paper
    brain_crop_share: float = 1 / 3
    scale_range: tuple[float, float] = (0.8, 1.25)
    intensity: str = "standard"  # or "strong": adds dark blobs and speckle (augment.py)
    fov_cut: float = 0.0  # share of slices cut to a random smaller field of view (augment.py)
    loss: str = "dice_ce"
    init: str = ""  # a weights file to start from (fine-tuning); empty: random initialization
    frozen: tuple[str, ...] = ()  # sub-modules of the network left as they are (trainer.py freeze)
    l2sp: float = 0.0  # pull toward the starting weights (l2sp.py); 0: none
    ema_decay: float = 0.998  # validated and saved: the exponential moving average of the weights (0: none)
    epoch_steps: int = 0  # steps between validations and checkpoints; 0: one pass over the training slices
    time_limit_minutes: float = 0  # stop at the first epoch end past this much wall time (0: none); resumable


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
    base: str = ""  # base weights (default: the shipped ones)
    minutes: float = 8.0  # stop at the first step past this much time (scored, and kept if it is the best)
    steps: int = 2000
    lr: float = 1e-4
    l2sp: float = 1e-3
    frozen: tuple[str, ...] = ADAPT_FROZEN
    batch_size: int = 8
    check_every: int = 25  # steps between scores on the held-out slices
    min_gain: float = MIN_GAIN  # below this held-out gain the base weights are kept
    seed: int = 0
    device: str = "auto"
    any_modality: bool = False  # corrections of several modalities (one site model for both)
