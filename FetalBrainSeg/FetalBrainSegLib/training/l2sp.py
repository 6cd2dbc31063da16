"""L2-SP (Li et al., "Explicit Inductive Bias for Transfer Learning with Convolutional Networks", ICML 2018):
a fine-tune's loss adds weight x the squared distance of the trained weights from where they started, so
that what the starting weights knew (a modality or head size the new data do not show) is not simply
overwritten. 0 turns it off."""

from __future__ import annotations

import torch


class StartingPointPenalty:
    def __init__(self, model: torch.nn.Module, weight: float):
        if weight < 0:
            raise ValueError(f"the L2-SP weight must be 0 or more, not {weight}")
        self.weight = weight
        # the trained parameters only: frozen ones cannot move, so their distance is 0
        self.start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        """weight x sum of squared differences from the starting weights (a scalar tensor with gradient)."""
        distance = sum(((p - self.start[n]) ** 2).sum() for n, p in model.named_parameters() if n in self.start)
        return self.weight * distance
