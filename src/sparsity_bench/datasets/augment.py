"""Batched training augmentation on the run device: random crops of the padded image, horizontal flips.

The same transforms as torchvision's RandomCrop(size, padding, fill=0) and
RandomHorizontalFlip, drawn per example, but done for a whole batch with one
gather on the device, without per-example Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropFlip:
    padding: int = 4  # zero pixels added on each side before cropping back to the original size; 0: no crop
    flip: bool = True  # mirror each example left-right with probability 1/2

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: [B, C, H, W] of any dtype; returns a new tensor of the same shape and dtype."""
        b, c, h, w = x.shape
        p, dev = self.padding, x.device
        if p > 0:
            x = F.pad(x, (p, p, p, p))  # zeros: black pixels, as RandomCrop(fill=0)
        hp, wp = h + 2 * p, w + 2 * p
        dt = torch.int32 if x.numel() < 2**31 else torch.int64  # int32 indices gather faster
        rows = torch.arange(h, device=dev, dtype=dt).expand(b, h)
        cols = torch.arange(w, device=dev, dtype=dt).expand(b, w)
        if p > 0:
            rows = rows + torch.randint(0, 2 * p + 1, (b, 1), device=dev, dtype=dt, generator=generator)
            cols = cols + torch.randint(0, 2 * p + 1, (b, 1), device=dev, dtype=dt, generator=generator)
        if self.flip:
            mirror = torch.rand(b, 1, device=dev, generator=generator) < 0.5
            cols = torch.where(mirror, cols.flip(1), cols)  # reading the crop's columns backwards mirrors it
        # Flat positions of every output pixel in the padded batch, gathered by one index_select
        # (several times faster on CPUs than advanced indexing with per-dimension index tensors).
        first = torch.arange(b, device=dev, dtype=dt).view(b, 1) * (c * hp * wp)
        pixel = (first + rows * wp).view(b, 1, h, 1) + cols.view(b, 1, 1, w)
        index = pixel + (torch.arange(c, device=dev, dtype=dt) * (hp * wp)).view(1, c, 1, 1)
        return x.reshape(-1).index_select(0, index.view(-1)).view(b, c, h, w)
