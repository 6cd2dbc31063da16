"""The model registry: every network the engine can train, run and benchmark, by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .rfbsnet import RFBSNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "rfbsnet": RFBSNet,
}


def build_model(name: str, **options) -> nn.Module:
    try:
        factory = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None
    return factory(**options)
