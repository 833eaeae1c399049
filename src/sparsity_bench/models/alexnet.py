"""AlexNet as torchvision defines it (the one-tower "One weird trick" variant), sized by the data.

Module names and shapes are torchvision's (``features``, ``avgpool``,
``classifier``), so its ImageNet weights load into the default widths; the
classifier ends in ``num_classes`` outputs and the first conv reads the data's
channels. 61,100,840 parameters at 1000 classes.

Small inputs are refused rather than adapted: the stride-4 11x11 stem and three
3x3/2 max-pools leave no pixel of an image under 63x63, so CIFAR (32x32) and MNIST
(28x28) need another network (resnet32, wrn); anything from 63x63 up works, the
adaptive pooling bringing the last feature map to 6x6.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

WIDTHS = (64, 192, 384, 256, 256)
HIDDEN = 4096
POOL = 6  # the adaptive pooling's output side


def _features_side(side: int) -> int:
    """Spatial side after the feature stack (<= 0: nothing left)."""
    conv1 = (side + 2 * 2 - 11) // 4 + 1
    pool = lambda s: (s - 3) // 2 + 1  # noqa: E731  (3x3 max-pool, stride 2)
    return pool(pool(pool(conv1)))  # the 5x5 and 3x3 convs keep the side


def min_input_side() -> int:
    return next(s for s in range(1, 1000) if _features_side(s) >= 1)


class AlexNet(nn.Module):
    def __init__(
        self, input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000, dropout: float = 0.5,
        widths: Sequence[int] = WIDTHS, hidden: int = HIDDEN,
    ):  # fmt: skip
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < min_input_side():
            raise ValueError(
                f"model=alexnet needs inputs of at least {min_input_side()}x{min_input_side()} pixels "
                f"(got {h}x{w}): its stride-4 stem and three max-pools leave nothing of smaller images; "
                "use model=resnet32 or model=wrn for CIFAR- or MNIST-sized data."
            )
        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(c, w1, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w1, w2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w4, w5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((POOL, POOL))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(w5 * POOL * POOL, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
