"""Plain nn.Modules, built from their config and the data's shape."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .lenet import LeNet5, LeNet300


def build_model(cfg, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    if cfg.name == "lenet300":
        return LeNet300(input_shape, num_classes, cfg.hidden)
    if cfg.name == "lenet5":
        return LeNet5(input_shape, num_classes)
    raise ValueError(f"unknown model {cfg.name}")
