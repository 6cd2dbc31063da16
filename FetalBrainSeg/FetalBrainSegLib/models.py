"""The model registry: every network the engine can train, run and benchmark, by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .rfbsnet import RFBSNet
from .segnet import SegNet
from .shuffleseg import ShuffleSeg, ShuffleSegV2
from .unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "rfbsnet": RFBSNet,
    "segnet": SegNet,
    "shuffleseg": ShuffleSeg,
    "shufflesegv2": ShuffleSegV2,
    "unet": UNet,
}
# the paper's Table 1 (Keras trainable parameters), for the comparison networks
PAPER_PARAMETERS = {"rfbsnet": 2_154_328, "segnet": 29_441_986, "unet": 34_512_258, "shuffleseg": 940_722,
                    "shufflesegv2": 3_043_294}


def build_model(name: str, **options) -> nn.Module:
    try:
        factory = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None
    return factory(**options)
