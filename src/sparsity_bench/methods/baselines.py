"""The baselines every comparison needs: no regularizer, L1, L2, magnitude pruning."""
from __future__ import annotations

import torch
from torch import nn

from ..config import PruneConfig, PruneRule
from ..metrics.sparsity import prunable_weights
from ..pruning import Masks, magnitude_masks
from .base import Method, WeightPenalty


class NoMethod(Method):
    """Dense training; pruning keeps every weight (only exact zeros are masked)."""

    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        keep = PruneConfig(rule=PruneRule.keep)
        return magnitude_masks(prunable_weights(model), keep)


class L1(WeightPenalty):
    def term(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().sum()


class L2(WeightPenalty):
    def term(self, w: torch.Tensor) -> torch.Tensor:
        return w.pow(2).sum()


class Magnitude(Method):
    """Han et al. 2015: dense training, then the smallest weights go (method.target_sparsity)."""
