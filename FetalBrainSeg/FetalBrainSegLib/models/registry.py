"""The model registry: every network the engine can train, run and benchmark, by name. The product ships
RFBSNet; the paper's comparison networks join it when experiments.networks is imported (register)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .rfbsnet import RFBSNet

MODELS: dict[str, Callable[..., nn.Module]] = {"rfbsnet": RFBSNet}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make `factory` buildable (trained, loaded from weights files) as `name`."""
    MODELS[name.lower()] = factory


def build_model(name: str, **options) -> nn.Module:
    try:
        factory = MODELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))} (the paper's comparison networks "
            "join these in python -m experiments.comparison)"
        ) from None
    return factory(**options)
