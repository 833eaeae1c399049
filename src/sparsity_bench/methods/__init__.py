"""Sparsity methods behind one interface (see base.Method), found by config name."""
from __future__ import annotations

from .base import Method
from .baselines import L1, L2, Magnitude, NoMethod
from .hoyer import GroupHoyer, GroupLasso, Hoyer
from .td import TD
from .l0 import L0

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


def build_method(cfg, n_train: int, input_shape: tuple[int, ...]) -> Method:
    return METHODS[cfg.name](cfg, n_train, input_shape)
