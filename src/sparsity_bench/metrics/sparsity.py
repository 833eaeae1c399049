"""Sparsity of prunable layers: pure functions of a model's weights.

Prunable layers are the Conv2d and Linear modules (their ``weight``; biases are
never pruned). A layer's *units* follow the L0 paper: a Linear layer's input
features, a Conv2d layer's output filters. A unit is kept while any of its
weights is non-zero. These are raw counts per layer: in a residual net a conv
filter can be all zero while its channel lives on through another branch of the
sum; the FLOPs count (flops.live_units) follows such channels, this does not.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear modules in registration (= forward, for our models) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": tensor} for every prunable layer (the weight its forward uses)."""
    return {f"{name}.weight": m.weight for name, m in prunable_layers(model)}


def raw_weight(m: nn.Module) -> torch.Tensor:
    """A layer's stored weight, under any parametrization of it (L0's gates, TD's dropout)."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


def trained_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.weight": the parameter the optimizer updates} for every prunable layer."""
    return {f"{name}.weight": raw_weight(m) for name, m in prunable_layers(model)}


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in evaluation mode for the block: its weights as evaluation computes them
    (L0: deterministic gates; TD: nothing dropped), not one random draw of training."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


def unit_alive(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Bool per unit: Linear input feature (column) or Conv2d output filter, any weight non-zero."""
    w = module.weight if weight is None else weight
    nz = w.detach() != 0
    if isinstance(module, nn.Linear):
        return nz.any(dim=0)
    return nz.flatten(1).any(dim=1)


def count_nonzero(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) weights of the prunable layers."""
    ws = prunable_weights(model).values()
    return sum(w.numel() for w in ws), sum(int((w != 0).sum()) for w in ws)


def architecture(model: nn.Module) -> str:
    """Units kept per prunable layer, L0-paper style: "219-214-100"."""
    return "-".join(str(int(unit_alive(m).sum())) for _, m in prunable_layers(model))
