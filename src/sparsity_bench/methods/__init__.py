"""Sparsity methods behind one interface (see base.Method), found by config name.

Residual nets. A channel of a residual stream is written by several layers (the
stem, every block's last conv, projections) and goes only when all of them agree
(metrics/coupling.py); the FLOPs count and the slimmer apply that rule. The methods:

- element-wise (none, l1, l2, hoyer, magnitude, td variant=weight, l0 granularity=weight):
  every prunable layer; coupling does not matter to single weights.
- group_hoyer, group_lasso: every prunable layer, each with its own filter and input-channel
  groups, as DeepHoyer regularizes ResNet-56. A residual channel leaves only when all its
  writers' filters (or all its readers' inputs) end up zero, which the penalty encourages
  but does not enforce.
- l0 (neuron gates) and td (variant=unit): by default only the layers whose units no other
  layer shares: the first conv of each block of a ResNet/WRN (the L0 paper's WRN placement),
  every layer of LeNet/AlexNet. method.layers (shell patterns) chooses others.

BatchNorm. Every method's masks also mask the scale and shift of the BatchNorm right
after a conv, on the filters the masks remove entirely (pruning.norm_masks): the unit then
emits zero instead of the constant BN(0), and the slimmer removes it.
"""
from __future__ import annotations

from ..config import SCHEMAS, PruneConfig
from .base import Method
from .baselines import L1, L2, Magnitude, NoMethod
from .hoyer import GroupHoyer, GroupLasso, Hoyer
from .td import TD
from .l0 import L0
from .combined import PlusPenalty
from .target import TargetSparsity

METHODS: dict[str, type[Method]] = {
    "none": NoMethod,
    "l1": L1,
    "l2": L2,
    "magnitude": Magnitude,
    "hoyer": Hoyer,
    "group_hoyer": GroupHoyer,
    "group_lasso": GroupLasso,
    "td": TD,
    "l0": L0,
}


def build_method(cfg, n_train: int, input_shape: tuple[int, ...], prune: PruneConfig | None = None) -> Method:
    """The method of cfg; a regularizer with method.target_sparsity gets its lam steered (target.py),
    measuring its progress with the run's prune rule (prune); method.plus adds a second penalty (combined.py),
    whose plus_lam is then the strength steered instead."""
    method = METHODS[cfg.name](cfg, n_train, input_shape)
    steered = cfg.target_sparsity is not None and cfg.steers_lam
    if cfg.plus is not None:
        # steered, the added penalty's masks are cut at the target too, as the method's are
        extra_cfg = SCHEMAS["method"][cfg.plus](lam=cfg.plus_lam, target_sparsity=cfg.target_sparsity if steered else None)
        method = PlusPenalty(method, METHODS[cfg.plus](extra_cfg, n_train, input_shape))
    if steered:
        method = TargetSparsity(method, prune if prune is not None else PruneConfig())
    return method
