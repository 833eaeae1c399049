"""Masks: which weights survive, chosen from magnitudes, and holding them at zero."""
from __future__ import annotations

import torch
from torch import nn

from .config import PruneConfig, PruneRule, Scope

Masks = dict[str, torch.Tensor]  # "<layer>.weight" -> bool tensor, True = kept


def _keep_largest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask keeping exactly the round((1 - sparsity) * n) largest scores."""
    flat = scores.flatten()
    n_keep = flat.numel() - int(round(sparsity * flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if n_keep > 0:
        mask[flat.topk(n_keep, sorted=False).indices] = True
    return mask.view_as(scores)


def magnitude_masks(weights: dict[str, torch.Tensor], prune: PruneConfig, target_sparsity: float | None = None) -> Masks:
    """Masks from |w| by the prune rule; a target sparsity, when given, overrides the rule.

    Weights that are already exactly zero stay masked under every rule.
    """
    mags = {k: w.detach().abs() for k, w in weights.items()}
    rule, sparsity = prune.rule, prune.sparsity
    if target_sparsity is not None:
        rule, sparsity = PruneRule.sparsity, target_sparsity
    if rule == PruneRule.keep:
        return {k: m != 0 for k, m in mags.items()}
    if rule == PruneRule.std:
        return {k: (m >= prune.threshold * weights[k].detach().std()) & (m != 0) for k, m in mags.items()}
    if rule == PruneRule.abs:
        return {k: (m >= prune.threshold) & (m != 0) for k, m in mags.items()}
    if prune.scope == Scope.layer:
        return {k: _keep_largest(m, sparsity) & (m != 0) for k, m in mags.items()}
    flat = torch.cat([m.flatten() for m in mags.values()])
    keep = _keep_largest(flat, sparsity)
    out, start = {}, 0
    for k, m in mags.items():
        out[k] = keep[start : start + m.numel()].view_as(m) & (m != 0)
        start += m.numel()
    return out


def _param(model: nn.Module, key: str) -> torch.Tensor:
    layer, _, attr = key.rpartition(".")
    return getattr(model.get_submodule(layer), attr)


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every masked weight in place."""
    for key, mask in masks.items():
        _param(model, key).mul_(mask)


@torch.no_grad()
def mask_gradients(model: nn.Module, masks: Masks) -> None:
    """Zero the gradients of masked weights, so optimizer state never builds up for them."""
    for key, mask in masks.items():
        p = _param(model, key)
        if p.grad is not None:
            p.grad.mul_(mask)
