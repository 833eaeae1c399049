"""The two MNIST networks of the L0, Targeted Dropout and DeepHoyer papers."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class LeNet300(nn.Module):
    """LeNet-300-100: fully connected 784-300-100-10 with ReLU."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, hidden: Sequence[int] = (300, 100)):
        super().__init__()
        sizes = [int(torch.tensor(input_shape).prod()), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5-Caffe: conv 20@5x5, max-pool, conv 50@5x5, max-pool, fc 800-500, fc 500-10."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        spatial = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * spatial[0] * spatial[1], 500), nn.ReLU(),
            nn.Linear(500, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
