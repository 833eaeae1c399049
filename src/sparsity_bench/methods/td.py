"""Targeted Dropout (Gomez et al. 2019, arXiv 1905.13678).

Every weight is seen as a (fan_in, n_out) matrix whose columns are output units.
The *candidates* are the weights (or units) that magnitude pruning would remove:

- variant=weight: in each column, the bottom gamma fraction of |w|;
- variant=unit: the bottom gamma fraction of columns by L2 norm, per layer.

During training each candidate is dropped with probability alpha, without
rescaling, so the network learns to do without exactly the weights it will lose.
At evaluation (model.eval()) all current candidates are removed when
method.eval_mask is true (the paper), or the full weights are used when false.

The candidates are recomputed from the current weights at every forward pass, by
a per-column selection (kth_smallest), never a sort. The masking is a
torch.nn.utils.parametrize parametrization of `weight`, so the raw weights stay
ordinary parameters and detach() simply removes it. On the CPU the per-step work
runs in numpy and the drop draws come from the method's own SFC64 generator
(seeded from torch at attach, saved in state_dict for exact resume); on GPUs both
stay in torch. Reading a layer's weight in train mode draws a fresh mask.

Ramping (method.ramp): with s = min(1, progress / ramp_fraction), the fraction of
the ramp done,
    alpha(s) = alpha * s
    gamma(s) = gamma * 1.9 * s                  for s <= 1/2   (0 -> 0.95 gamma)
             = gamma * (0.95 + 0.1 * (s - 1/2)) for s >  1/2   (0.95 gamma -> gamma)
i.e. piecewise linear through the paper's points (0.95 gamma at T/2, gamma at T;
the paper's T is 40k steps, here a fraction of the training phase).

Pruning (masks): the candidate set at the full gamma, i.e. what evaluation removes
at the end of training (exact zeros are masked too, as for every method). With
method.target_sparsity set, masks are magnitude masks like every other method's.
Layers in method.exclude are neither targeted nor pruned (unless target_sparsity).

Which layers (method.layers, shell patterns; default below): variant=weight targets
every prunable layer. variant=unit by default targets only the layers whose output
channels no other layer writes: in a ResNet, the first conv of each block. The others
write into a residual sum, where removing a filter removes one branch's share of a
channel, not the channel (see metrics/coupling.py). method.layers=["*"] targets all.

BatchNorm: TD masks conv weights, as the paper does. A conv followed by a BatchNorm
that drops a whole filter in a training step (variant=unit) leaves that channel at the
BatchNorm's shift for the step; at pruning the BatchNorm channel of a removed filter is
masked too (pruning.norm_masks), so the pruned unit emits zero.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import Granularity, PruneConfig, TDConfig
from ..metrics.coupling import structure_or_none
from ..metrics.sparsity import prunable_layers, raw_weight, trained_weights
from ..pruning import (
    Masks, bottom_k_mask, check_layer_names, kth_smallest, magnitude_masks, match_layers, n_bottom, numpy_fast_path,
    unit_rows,
)
from .base import Method

_HALF_16 = 1 << 15
log = logging.getLogger("sparsity_bench")


def uniform16(shape: tuple[int, ...], device: torch.device, bitgen: np.random.BitGenerator | None = None) -> torch.Tensor:
    """int16 draws uniform over [-2^15, 2^15).

    On the CPU with a numpy bit generator, four draws are cut from each of its 64-bit
    words: several times faster than torch's CPU generator, which spends one
    Mersenne-Twister call per element whatever the dtype. Otherwise torch's generator.
    """
    if bitgen is None or device.type != "cpu":
        return torch.randint(-_HALF_16, _HALF_16, shape, dtype=torch.int16, device=device)
    n = math.prod(shape)
    words = bitgen.random_raw((n + 3) // 4)
    return torch.from_numpy(words.view(np.int16)[:n].reshape(shape))


def threshold16(p: float) -> int:
    """t such that P(uniform16 < t) = p, p resolved to 1/65536; 2^15 (beyond int16) means always."""
    return round(min(max(p, 0.0), 1.0) * (1 << 16)) - _HALF_16


def bernoulli_mask(
    shape: tuple[int, ...], p: float, device: torch.device, bitgen: np.random.BitGenerator | None = None
) -> torch.Tensor:
    """Bool tensor, each entry True with probability p (resolved to 1/65536)."""
    t = threshold16(p)
    if t >= _HALF_16:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return uniform16(shape, device, bitgen) < t


def keep_factor(score: torch.Tensor, thr: torch.Tensor, draws: torch.Tensor | None, t: int, dtype: torch.dtype) -> torch.Tensor:
    """1 where score > thr (not a candidate) or draws >= t (a candidate spared), else 0, as dtype.

    All arguments broadcast against each other. On the CPU numpy does it (numpy_fast_path).
    """
    if numpy_fast_path(score) and dtype == score.dtype:
        keep = np.greater(score.numpy(), thr.numpy())
        if draws is not None:
            keep = keep | (draws.numpy() >= t)
        return torch.from_numpy(keep.astype(score.numpy().dtype))
    keep = score > thr
    if draws is not None:
        keep = keep | (draws >= t)
    return keep.to(dtype)


class TargetedDropout(nn.Module):
    """The parametrization of one layer's weight; alpha and gamma are set by the method's schedule.

    Drop draws come from `bitgen` on the CPU when one is given (the method shares one
    among its layers and checkpoints it), else from torch's generator.
    """

    def __init__(self, variant: Granularity, unit_drop: Granularity, eval_mask: bool, bitgen: np.random.BitGenerator | None = None):
        super().__init__()
        self.variant = Granularity(variant)
        self.unit_drop = Granularity(unit_drop)
        self.eval_mask = eval_mask
        self.bitgen = bitgen
        self.alpha = 0.0
        self.gamma = 0.0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.gamma <= 0 or (self.training and self.alpha <= 0) or (not self.training and not self.eval_mask):
            return w
        rows = unit_rows(w)
        with torch.no_grad():
            keep = self.keep(rows)
        return w if keep is None else (rows * keep).view_as(w)

    def keep(self, rows: torch.Tensor) -> torch.Tensor | None:
        """0/1 factor on the [n_out, fan_in] view ([n_out, 1] for whole units): 0 = zeroed now.

        Candidates are chosen as bottom_weights / bottom_units choose them (pruning.py).
        None when gamma selects nothing.
        """
        rows = rows.detach()
        if self.variant == Granularity.weight:
            score = rows.abs()  # [n_out, fan_in]
            k = n_bottom(rows.shape[1], self.gamma)
            thr = kth_smallest(score, k) if k else None  # per column
            draw_shape = tuple(rows.shape)
        else:
            score = rows.norm(dim=1, keepdim=True)  # [n_out, 1]
            k = n_bottom(rows.shape[0], self.gamma)
            thr = kth_smallest(score.t(), k) if k else None  # per layer
            draw_shape = tuple(rows.shape) if self.unit_drop == Granularity.weight else (rows.shape[0], 1)
        if thr is None:
            return None
        t = threshold16(self.alpha)
        spare = self.training and t < _HALF_16  # some candidates survive this step: draw which
        draws = uniform16(draw_shape, rows.device, self.bitgen) if spare else None
        return keep_factor(score, thr, draws, t, rows.dtype)

    def extra_repr(self) -> str:
        return f"variant={self.variant.value}, alpha={self.alpha:.4g}, gamma={self.gamma:.4g}, eval_mask={self.eval_mask}"


class TD(Method):
    cfg: TDConfig

    def __init__(self, cfg: TDConfig, n_train: int, input_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__(cfg, n_train, input_shape)
        self.progress = 0.0  # through the training phase, as step() last saw it
        self._targets: list[TargetedDropout] = []
        self._bitgen: np.random.SFC64 | None = None  # CPU drop draws; seeded from torch, checkpointed

    # ------------------------------------------------------------------ schedule
    def schedule(self, progress: float) -> tuple[float, float]:
        """(alpha, gamma) at a point of the training phase (progress in [0, 1])."""
        cfg = self.cfg
        if not cfg.ramp:
            return cfg.alpha, cfg.gamma
        s = min(1.0, max(0.0, progress) / cfg.ramp_fraction)
        gamma = 1.9 * s if s <= 0.5 else 0.95 + 0.1 * (s - 0.5)
        return cfg.alpha * s, cfg.gamma * gamma

    def _apply_schedule(self) -> None:
        alpha, gamma = self.schedule(self.progress)
        for t in self._targets:
            t.alpha, t.gamma = alpha, gamma

    # ------------------------------------------------------------------ the interface
    def targeted_layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The layers TD acts on: method.layers (shell patterns) or by default every prunable
        layer, for variant=unit only those whose output channels no other layer writes too
        (a residual sum); minus method.exclude."""
        layers = prunable_layers(model)
        names = [n for n, _ in layers]
        check_layer_names(self.cfg.exclude, names, "method.exclude")
        if self.cfg.layers is not None:
            chosen = set(match_layers(self.cfg.layers, names, "method.layers"))
        elif Granularity(self.cfg.variant) == Granularity.unit:
            st = structure_or_none(model, self.input_shape)
            chosen = set(names) - (st.coupled_outputs if st is not None else set())
        else:
            chosen = set(names)
        return [(n, m) for n, m in layers if n in chosen and n not in self.cfg.exclude]

    def attach(self, model: nn.Module) -> None:
        if self._bitgen is None:  # not restored by load_state_dict: seed from torch, so the run's seed decides
            self._bitgen = np.random.SFC64(int(torch.randint(1 << 62, ())))
        self._targets = []
        layers = self.targeted_layers(model)
        whole = whole_columns_targeted(layers, self.cfg.gamma, self.cfg.variant)
        if whole:
            log.warning(
                "method.gamma=%g targets every weight of each unit of %s (too few weights per unit): "
                "those layers end with nothing left; leave them out with method.exclude or lower gamma.",
                self.cfg.gamma, ", ".join(whole),
            )
        for name, m in layers:
            td = TargetedDropout(self.cfg.variant, self.cfg.unit_drop, self.cfg.eval_mask, self._bitgen)
            parametrize.register_parametrization(m, "weight", td)
            self._targets.append(td)
        self._apply_schedule()

    def step(self, progress: float) -> None:
        self.progress = progress
        self._apply_schedule()

    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        weights = {key: w.detach() for key, w in trained_weights(model).items()}
        if self.cfg.target_sparsity is not None:
            return magnitude_masks(weights, prune, self.cfg.target_sparsity)
        masks = {}
        for name, m in prunable_layers(model):
            w = weights[f"{name}.weight"]
            keep = w != 0
            if parametrize.is_parametrized(m, "weight"):
                keep &= ~bottom_k_mask(w, self.cfg.gamma, self.cfg.variant)
            masks[f"{name}.weight"] = keep
        return masks

    def detach(self, model: nn.Module) -> None:
        for _, m in prunable_layers(model):
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        self._targets = []

    def scalars(self, model: nn.Module) -> dict[str, float]:
        alpha, gamma = self.schedule(self.progress)
        return {"alpha": alpha, "gamma": gamma}

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "bitgen": None if self._bitgen is None else self._bitgen.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress = float(state.get("progress", 0.0))
        if state.get("bitgen") is not None:
            self._bitgen = np.random.SFC64()
            self._bitgen.state = state["bitgen"]
            for t in self._targets:
                t.bitgen = self._bitgen
        self._apply_schedule()


def whole_columns_targeted(layers: list[tuple[str, nn.Module]], gamma: float, variant: Granularity) -> list[str]:
    """Names of the layers where gamma selects all of a column's weights (variant=weight) or
    all of the layer's units (variant=unit)."""
    def size(m: nn.Module) -> int:
        rows = unit_rows(raw_weight(m))
        return rows.shape[1] if Granularity(variant) == Granularity.weight else rows.shape[0]

    return [name for name, m in layers if n_bottom(size(m), gamma) >= size(m)]
