"""method.plus: a second regularizer on top of any method.

The papers' tools combine: L0's neuron gates decide which units go, while Hoyer-Square
(or L1, Group-HS, ...) drives single weights of the units that stay to zero; Targeted
Dropout can be paired with a penalty the same way. PlusPenalty keeps the base method
whole (its gates or dropout, its penalty, its masks) and adds the weight penalty of
method.plus, at strength method.plus_lam, on the parameters the optimizer updates: the
weights under L0's gates or TD's dropout, not their gated or dropped view, so the
penalty shapes what is trained rather than one random draw of it.

A weight survives pruning when both keep it: the base method's masks (L0: open gates)
and the run's prune rule on the weights the model now computes with (with L0, the
weights times their deterministic gates), which removes what the penalty drove to zero.

With method.target_sparsity, plus_lam is the strength steered (target.TargetSparsity wraps
PlusPenalty and steers steered(), the added penalty), measured on those same weights, so
the gates' zeros count; both masks are then cut at exactly the target.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import PruneConfig
from ..metrics.sparsity import evaluating, trained_weights
from ..pruning import Masks
from .base import Method, WeightPenalty, Wrapped


class PlusPenalty(Wrapped):
    """inner's method with extra's weight penalty added to its loss and extra's prune rule to its masks."""

    def __init__(self, inner: Method, extra: WeightPenalty):
        super().__init__(inner)
        self.extra = extra

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        terms = [t for t in (self.inner.penalty(model), self.extra.penalty_on(trained_weights(model))) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        masks = self.inner.weight_masks(model, prune)
        with evaluating(model):  # in training mode TD's view would be a random draw
            extra = self.extra.weight_masks(model, prune)
        for key, keep in extra.items():
            masks[key] = masks[key] & keep if key in masks else keep
        return masks

    def steered(self) -> Method:
        return self.extra

    def report(self) -> dict[str, Any]:
        return {**self.inner.report(), "plus": self.cfg.plus, "plus_lam": self.cfg.plus_lam}
