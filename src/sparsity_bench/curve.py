"""The Targeted Dropout paper's evaluation protocol, for every method.

After training (and method.detach), a copy of the model is pruned one-shot by
magnitude at each fraction k and scored without finetuning:

- granularity=weight: in each column of the (fan_in, n_out) view (columns = output
  units, conv filters), the round(k * fan_in) smallest |w| are zeroed;
- granularity=unit: per layer, the round(k * n_out) columns of smallest L2 norm are zeroed.

Layers named in curve.exclude are not pruned (the paper spares the stem conv and
the classifier). The trained model itself is never modified.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .config import CurveConfig
from .metrics.sparsity import count_nonzero, prunable_layers
from .pruning import bottom_k_mask, check_layer_names


@torch.no_grad()
def prune_curve(model: nn.Module, cfg: CurveConfig, score: Callable[[nn.Module], float]) -> list[dict]:
    """[{fraction, test_acc, sparsity}] for each of cfg.fractions; score(model) gives the accuracy.

    sparsity is that of all prunable weights, excluded layers included.
    """
    if not cfg.fractions:
        return []
    layers = prunable_layers(model)
    check_layer_names(cfg.exclude, [n for n, _ in layers], "curve.exclude")
    work = copy.deepcopy(model)
    targets = [m for name, m in prunable_layers(work) if name not in cfg.exclude]
    trained = [m.weight.detach().clone() for m in targets]
    points = []
    for fraction in cfg.fractions:
        for m, w in zip(targets, trained):
            m.weight.copy_(w.masked_fill(bottom_k_mask(w, fraction, cfg.granularity), 0))
        total, nonzero = count_nonzero(work)
        points.append({"fraction": fraction, "test_acc": score(work), "sparsity": 1.0 - nonzero / total})
    return points
