"""Sparsity methods behind one interface (see base.Method), found by config name."""
from __future__ import annotations

from ..config import PruneConfig
from .base import Method
from .baselines import L1, L2, Magnitude, NoMethod
from .hoyer import GroupHoyer, GroupLasso, Hoyer
from .td import TD
from .l0 import L0
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
    measuring its progress with the run's prune rule (prune)."""
    method = METHODS[cfg.name](cfg, n_train, input_shape)
    if cfg.target_sparsity is not None and cfg.steers_lam:
        method = TargetSparsity(method, prune if prune is not None else PruneConfig())
    return method
