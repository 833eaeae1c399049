"""Small generated data with learnable structure, shaped like MNIST by default.

Each class has a smooth random prototype image; an example is its class prototype
plus Gaussian pixel noise, clamped to [0, 1]. Linear and conv nets both learn it in
an epoch or two, so end-to-end tests exercise real learning in seconds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import SyntheticConfig


def make_synthetic(cfg: SyntheticConfig):
    g = torch.Generator().manual_seed(cfg.generator_seed)
    c, h, w = cfg.shape
    coarse = torch.rand(cfg.num_classes, c, max(h // 4, 1), max(w // 4, 1), generator=g)
    prototypes = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)

    def sample(n: int):
        y = torch.randint(cfg.num_classes, (n,), generator=g)
        x = prototypes[y] + 0.25 * cfg.noise * torch.randn(n, c, h, w, generator=g)
        return x.clamp_(0, 1), y

    return sample(cfg.train_size), sample(cfg.test_size), cfg.num_classes
