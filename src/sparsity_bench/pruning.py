"""Masks: which weights survive, chosen from magnitudes, and holding them at zero.

Column view: Targeted Dropout and its evaluation see every weight as a matrix
(fan_in, n_out) whose columns are the output units (a Linear layer's outputs, a
Conv2d layer's filters). ``unit_rows`` returns that matrix transposed, one row per
column, which for [out, in] and [C_out, C_in, k, k] tensors is a free reshape.
"""
from __future__ import annotations

import fnmatch

import numpy as np
import torch
from torch import nn

from .config import ConfigError, Granularity, PruneConfig, PruneRule, Scope

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


# ---------------------------------------------------------------- column view, bottom-k
def unit_rows(w: torch.Tensor) -> torch.Tensor:
    """The (fan_in, n_out) view of a weight, transposed: [n_out, fan_in], one row per output unit."""
    return w.reshape(w.shape[0], -1)


def n_bottom(n: int, fraction: float) -> int:
    """How many of n items a fraction selects: round(fraction * n), halves to even (as _keep_largest)."""
    return min(n, max(0, int(round(fraction * n))))


NUMPY_ON_CPU = True  # per-step selection and masking of CPU float tensors in numpy (False: torch, as on GPUs)
_INT_VIEW = {torch.float32: np.int32, torch.float64: np.int64}


def numpy_fast_path(t: torch.Tensor) -> bool:
    """Whether per-step work on t runs in numpy: a float32/64 CPU tensor.

    On the CPU numpy's selection, comparisons and bool -> float casts run several
    times faster than torch's, and its calls cost less even on tiny tensors.
    """
    return NUMPY_ON_CPU and t.device.type == "cpu" and t.dtype in _INT_VIEW


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest (1-based) of each row of a 2-D tensor of NON-NEGATIVE values, as a [rows, 1] column.

    A selection, never a sort. On the CPU numpy's introselect runs several times
    faster than torch's kthvalue/topk (which track indices), and faster still on the
    bit patterns, whose integer order is the order of non-negative floats.
    """
    if numpy_fast_path(values):
        a = values.detach().numpy()
        bits = a.view(_INT_VIEW[values.dtype]) if a.flags.c_contiguous else a
        part = np.partition(bits, k - 1, axis=1)[:, k - 1 : k]
        return torch.from_numpy(np.ascontiguousarray(part).view(a.dtype))
    return values.detach().kthvalue(k, dim=1, keepdim=True).values


def bottom_weights(rows: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool [n_out, fan_in]: in each row (= column of the paper's view) the round(fraction * fan_in) smallest |w|.

    Entries tied with the k-th smallest are all selected; for real-valued weights ties
    happen only among exact zeros, which removing changes nothing.
    """
    k = n_bottom(rows.shape[1], fraction)
    mags = rows.detach().abs()
    if k == 0:
        return torch.zeros_like(mags, dtype=torch.bool)
    return mags <= kth_smallest(mags, k)


def bottom_units(rows: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool [n_out]: the round(fraction * n_out) rows (units) of smallest L2 norm (ties as bottom_weights)."""
    norms = rows.detach().norm(dim=1)
    k = n_bottom(norms.numel(), fraction)
    if k == 0:
        return torch.zeros_like(norms, dtype=torch.bool)
    return norms <= kth_smallest(norms[None], k)[0]


def bottom_k_mask(w: torch.Tensor, fraction: float, granularity: Granularity | str) -> torch.Tensor:
    """Bool like w, True on the bottom `fraction` by magnitude: per column ("weight") or whole columns ("unit")."""
    rows = unit_rows(w)
    if Granularity(granularity) == Granularity.unit:
        return bottom_units(rows, fraction)[:, None].expand_as(rows).reshape(w.shape)
    return bottom_weights(rows, fraction).view(w.shape)


def check_layer_names(names: list[str], layers: list[str], key: str) -> None:
    """ConfigError unless every name is one of the model's prunable layers."""
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ConfigError(f"{key} names no prunable layer of this model: {', '.join(unknown)}; the prunable layers are {', '.join(layers)}.")


def match_layers(patterns: list[str], layers: list[str], key: str) -> list[str]:
    """The layers (in model order) that any of the shell-style patterns names, e.g. "layer*.conv1";
    ConfigError for a pattern that names none."""
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in layers)]
    if unmatched:
        raise ConfigError(
            f"{key} names no prunable layer of this model: {', '.join(unmatched)}; the prunable layers are {', '.join(layers)}."
        )
    return [name for name in layers if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


@torch.no_grad()
def norm_masks(model: nn.Module, masks: Masks, input_shape) -> Masks:
    """Masks for the BatchNorm that alone reads a conv, on the channels whose filter `masks` removes entirely.

    A removed filter outputs 0, but the BatchNorm after it would still emit the constant
    BN(0) = beta - gamma * mean / std on that channel. Masking the BN channel's weight and
    bias as well (held at 0 through finetuning like any masked weight) makes the unit emit
    exactly 0, so that the FLOPs count and the slimmer can drop it. The constant is dropped,
    not folded into the next layer: folding a constant map into a zero-padded 3x3 conv is
    not exact at the image borders. Finetuning absorbs the change. Masks already given for
    a BatchNorm are combined (both must keep a channel).
    """
    from .metrics.coupling import structure_or_none

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return {}
    st = structure_or_none(model, input_shape)
    if st is None:
        return {}
    out: Masks = {}
    for conv, norm in st.norm_after.items():
        mask = masks.get(f"{conv}.weight")
        bn = model.get_submodule(norm)
        if mask is None or not bn.affine:
            continue
        keep = mask.flatten(1).any(dim=1)
        if bool(keep.all()):
            continue
        for key in (f"{norm}.weight", f"{norm}.bias"):
            out[key] = keep & masks[key] if key in masks else keep.clone()
    return out


@torch.no_grad()
def heaviest_tail(model: nn.Module, masks: Masks) -> float:
    """max |w| / std(w) over the masked weight tensors (biases and norm scales aside): large when a few weights dominate std."""
    ws = [_param(model, k) for k in masks]
    return max((float(w.abs().max() / w.std()) for w in ws if w.dim() > 1 and w.std() > 0), default=0.0)


def damage_warning(val_before: float | None, val_after: float | None, num_classes: int, tail: float, prune: PruneConfig) -> str | None:
    """A warning when pruning took validation accuracy more than halfway down to chance, else None
    (also None without a validation split: the test set is not used to judge).

    The usual cause under prune.rule=std: a regularizer that is blind to scale (Hoyer-Square)
    trained with Adam lets a few weights grow to tens of std, which inflates std, and the
    std-scaled threshold then removes weights the network relies on.
    """
    if val_before is None or val_after is None:
        return None
    chance = 1.0 / num_classes
    if val_after >= chance + 0.5 * (val_before - chance):
        return None
    message = f"pruning took validation accuracy from {100 * val_before:.2f}% to {100 * val_after:.2f}%; finetuning may not recover it. "
    if PruneRule(prune.rule) == PruneRule.std and tail > 10:
        return message + (
            f"The largest weight is {tail:.0f} std of its tensor, so prune.rule=std with threshold {prune.threshold:g} "
            "cuts far into the weights in use: bound the scale with train.weight_decay, or use a smaller "
            "prune.threshold or prune.rule=sparsity."
        )
    return message + "Try a smaller prune.threshold / prune.sparsity, or a weaker method.lam."
