"""Accelerator options of a run: bf16 autocast, channels_last, torch.compile.

bf16 and compile are off by default; channels_last=auto turns on for conv nets on
every device (measured on a 1-thread CPU: a LeNet-5 training step 1.2-1.5x and a
ResNet-32 step 1.0-1.3x faster than in the default layout). The model itself stays a
plain module: channels_last only changes the strides of its 4-d weights, and
compilation wraps the training forward pass in a separate callable, so state_dict
keys, deep copies, checkpoints and slimming see the module as it is.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import Precision, RunConfig


@dataclass(frozen=True)
class Accel:
    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def resolve(cls, cfg: RunConfig, device: torch.device, model: nn.Module) -> "Accel":
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        wanted = cfg.channels_last in ("true", "auto")
        return cls(device, Precision(cfg.precision) == Precision.bf16, wanted and has_conv, cfg.compile)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model in its memory format (in place), on the device it already is on."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def training_forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the training loop calls: the compiled model (sharing its parameters) or the model."""
        return torch.compile(model) if self.compile else model

    def describe(self) -> str:
        on = [name for name, flag in (("bf16", self.bf16), ("channels_last", self.channels_last), ("compile", self.compile)) if flag]
        return ", ".join(on) or "fp32"
