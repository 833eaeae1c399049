"""Wide ResNet (Zagoruyko & Komodakis, 2016): WRN-d-k for CIFAR-sized inputs.

A 3x3 stem conv to 16 channels, then 3 stages of n = (d - 4) / 6 pre-activation
blocks of widths 16k, 32k, 64k (stride 2 into stages 2 and 3), a final BN-ReLU,
global average pooling and a Linear classifier. A block is
bn1-relu-conv1(3x3)-bn2-relu-dropout-conv2(3x3) plus the identity, or a 1x1
projection of relu(bn1(x)) where the width or stride changes. WRN-28-10 has
36,479,194 parameters for 10 classes (36.5M, the paper's figure).

The L0 paper gates the output filters of each block's conv1, which feed only
conv2; every other conv writes into the residual stream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet_cifar import PreActBlock, conv3x3, init_weights


def check_depth(depth: int) -> int:
    """Blocks per stage of a WRN-d-k; ValueError (one sentence) unless d = 6n + 4."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"model.depth must be 6n + 4 for a Wide ResNet (10, 16, 22, 28, 40, ...): got {depth}.")
    return (depth - 4) // 6


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n = check_depth(depth)
        if widen_factor < 1:
            raise ValueError(f"model.widen_factor must be a positive integer: got {widen_factor}.")
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(in_channels, 16)
        c_in = 16
        for s, c_out in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(PreActBlock(c_in, c_out, 2 if (s > 0 and b == 0) else 1, "B", dropout))
                c_in = c_out
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn_final(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
