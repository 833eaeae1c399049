"""The CIFAR ResNets of He et al. (2016): 3 stages of n basic blocks, 6n + 2 layers.

Stage widths 16/32/64 (times ``width``), a 3x3 stem conv, global average pooling
and one Linear classifier. Two block forms:

- post-activation (He et al., "Deep Residual Learning", 2016), the default:
  relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x));
- pre-activation (He et al., "Identity Mappings", 2016): conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut,
  with a final BN-ReLU before the pooling; the Targeted Dropout paper's ResNet-32
  is this form at width 2 (stages 32/64/128).

Shortcuts where the shape changes (stride 2, twice the channels):

- ``A`` (the paper's CIFAR choice, parameter-free): the input subsampled by 2 and
  zero-padded with as many channels as it has. ResNet-32 then has 464,154 parameters
  for 10 classes, the paper's "0.46M".
- ``B``: a 1x1 stride-2 projection conv (+ BN in the post-activation form), 466,906
  parameters for ResNet-32.

In every block the output channels of ``conv1`` feed only ``conv2``: they can be
removed one by one. The channels of the residual stream are written by the stem,
every block's last conv (and projection) and read by every block: a stream channel
goes only when all of them agree (see metrics/coupling.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STAGES = 3


def check_depth(depth: int) -> int:
    """Blocks per stage of a 6n + 2 layer CIFAR ResNet; ValueError (one sentence) otherwise."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"model.depth must be 6n + 2 for a CIFAR ResNet (8, 14, 20, 32, 44, 56, 110, ...): got {depth}."
        )
    return (depth - 2) // 6


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by `stride`; output channel o copies input channel sources[o], or is zero.

    Built as [the c_in inputs, then c_out - c_in zeros]. Slimming can remove outputs
    and inputs of it (through the channel-routing methods below, which
    metrics/coupling.py calls), after which any layout can arise: an index then
    picks each output from the inputs and one appended zero channel.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = c_in, c_out, stride
        self.built_layout = True  # [inputs, zeros]: a plain F.pad, no index needed
        # output o takes channel index[o] of [inputs, one zero channel] (not in the state_dict)
        self.register_buffer("index", torch.arange(c_out).clamp_max(c_in), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if self.built_layout:
            return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return F.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.index)

    # ------------------------------------------------------------ channel routing (metrics/coupling.py)
    def channel_sources(self) -> torch.Tensor:
        """Per output channel, the input channel it copies, or -1 for a zero channel (on the CPU)."""
        index = self.index.cpu()
        return index.masked_fill(index == self.in_channels, -1)

    def _route(self, sources: torch.Tensor, in_channels: int) -> None:
        self.in_channels, self.out_channels, self.built_layout = in_channels, len(sources), False
        self.index = sources.masked_fill(sources < 0, in_channels).to(self.index.device)

    def keep_outputs(self, keep: list[int]) -> None:
        self._route(self.channel_sources()[keep], self.in_channels)

    def keep_inputs(self, keep: list[int]) -> None:
        """Only the inputs in `keep` remain; outputs that copied another become zero channels."""
        new = torch.full((self.in_channels,), -1, dtype=torch.long)
        new[keep] = torch.arange(len(keep))
        src = self.channel_sources()
        self._route(torch.where(src >= 0, new[src.clamp_min(0)], src), len(keep))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"


def _shortcut(c_in: int, c_out: int, stride: int, kind: str, norm: bool) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    if kind == "A":
        return ZeroPadShortcut(c_in, c_out, stride)
    conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if norm else nn.Sequential(conv)


class BasicBlock(nn.Module):
    """Post-activation: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.shortcut = _shortcut(c_in, c_out, stride, shortcut, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class PreActBlock(nn.Module):
    """Pre-activation: conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut; a projection reads relu(bn1(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), conv3x3(c_out, c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.shortcut = _shortcut(c_in, c_out, stride, shortcut, norm=False)
        self.project = isinstance(self.shortcut, nn.Sequential)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        y = F.relu(self.bn2(self.conv1(a)))
        if self.dropout is not None:
            y = self.dropout(y)
        y = self.conv2(y)
        if self.shortcut is None:
            return y + x
        return y + self.shortcut(a if self.project else x)


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet: stem conv, 3 stages of n blocks (stride 2 between stages), pooling, Linear."""

    def __init__(
        self, depth: int = 32, num_classes: int = 10, in_channels: int = 3, width: int = 1,
        preact: bool = False, shortcut: str = "A", base_widths: Sequence[int] = (16, 32, 64),
    ):  # fmt: skip
        super().__init__()
        n = check_depth(depth)
        if shortcut not in ("A", "B"):
            raise ValueError(f"model.shortcut must be A (zero padding) or B (1x1 projection): got {shortcut}.")
        widths = [w * width for w in base_widths]
        self.preact = preact
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = None if preact else nn.BatchNorm2d(widths[0])
        block = PreActBlock if preact else BasicBlock
        c_in = widths[0]
        for s, c_out in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(block(c_in, c_out, 2 if (s > 0 and b == 0) else 1, shortcut))
                c_in = c_out
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(c_in) if preact else None
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.bn_final is not None:
            x = F.relu(self.bn_final(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def init_weights(model: nn.Module) -> None:
    """He-normal convs (fan_out), BN at gamma 1 / beta 0, the classifier as torch's default Linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
