"""Plain nn.Modules, built from their config and the data's shape."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .alexnet import AlexNet
from .lenet import LeNet5, LeNet300
from .resnet_cifar import ResNetCifar
from .wrn import WideResNet


def build_model(cfg, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model a config names, for examples of `input_shape` (C, H, W) and `num_classes` classes.

    A model that cannot take such data raises ConfigError with the reason.
    """
    try:
        return _build(cfg, tuple(input_shape), num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _build(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if cfg.name == "lenet300":
        return LeNet300(input_shape, num_classes, cfg.hidden)
    if cfg.name == "lenet5":
        return LeNet5(input_shape, num_classes)
    if cfg.name in ("resnet32", "wrn", "alexnet") and len(input_shape) != 3:
        raise ValueError(f"model={cfg.name} takes images (channels, height, width), not inputs of shape {input_shape}.")
    if cfg.name == "resnet32":
        return ResNetCifar(cfg.depth, num_classes, input_shape[0], cfg.width, cfg.preact, cfg.shortcut)
    if cfg.name == "wrn":
        return WideResNet(cfg.depth, cfg.widen_factor, cfg.dropout, num_classes, input_shape[0])
    if cfg.name == "alexnet":
        return AlexNet(input_shape, num_classes, cfg.dropout)
    raise ValueError(f"unknown model {cfg.name}")
