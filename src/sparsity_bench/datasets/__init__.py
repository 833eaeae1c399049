"""Datasets -> (train, val, test) splits that serve batches on the run device.

Small sets (MNIST, Fashion-MNIST, CIFAR, synthetic) live on the run device as
tensors and are augmented there in batches; ImageNet streams from disk through
DataLoader workers. Both kinds share the interface of splits.Split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DatasetConfig
from ..errors import DataError  # noqa: F401  (re-exported)
from .augment import CropFlip
from .splits import Pixels, Split, StreamSplit, TensorSplit  # noqa: F401  (re-exported)


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape


def default_root() -> Path:
    """$SPARSITY_BENCH_DATA, else data/ of the source checkout, else ~/.cache/sparsity_bench."""
    if env := os.environ.get("SPARSITY_BENCH_DATA"):
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.home() / ".cache" / "sparsity_bench"


def dataset_root(cfg: DatasetConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else default_root()


def split_sizes(n: int, cfg: DatasetConfig) -> tuple[int, int]:
    """(training, validation) counts: validation = the last val_size examples, training = the first `limit` of the rest."""
    n_val = cfg.val_size
    if n_val >= n:
        raise DataError(f"dataset.val_size={n_val} leaves no training examples out of {n}; lower it.")
    n_train = n - n_val
    if cfg.limit is not None:
        n_train = min(n_train, cfg.limit)
    return n_train, n_val


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ([1, C, 1, 1], float32) of [N, C, H, W] inputs; uint8 pixels count as p/255."""
    if x.dtype != torch.uint8:
        return x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    s1 = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s1)
    for chunk in x.split(4096):  # float64 copies of a few MB at a time, not of the whole set
        c = chunk.double()
        s1 += c.sum(dim=(0, 2, 3))
        s2 += c.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = s1 / count
    var = (s2 - count * mean.square()) / max(count - 1, 1)
    shape = (1, -1, 1, 1)
    return (mean / 255).float().view(shape), (var.clamp_min(0).sqrt() / 255).float().clamp_min(1e-8).view(shape)


def in_memory(cfg: DatasetConfig, train: tuple, test: tuple, num_classes: int, device: torch.device) -> Data:
    """Tensor splits on the device; the training split alone is augmented, statistics come from it alone."""
    (x, y), (x_test, y_test) = train, test
    x, y, x_test, y_test = x.to(device), y.to(device), x_test.to(device), y_test.to(device)
    n_train, n_val = split_sizes(len(y), cfg)
    x_train, y_train, x_val, y_val = x[:n_train], y[:n_train], x[len(y) - n_val :], y[len(y) - n_val :]
    pixels = Pixels()
    if cfg.normalize:
        mean, std = channel_stats(x_train)
        if x.dtype == torch.uint8:
            pixels = Pixels(mean, std)  # applied per batch, after augmentation
        else:
            x_train, x_val, x_test = ((t - mean) / std for t in (x_train, x_val, x_test))
    augment = CropFlip(cfg.crop_padding, cfg.flip) if getattr(cfg, "augment", False) else None
    return Data(
        cfg.name,
        TensorSplit(x_train, y_train, pixels, augment),
        TensorSplit(x_val, y_val, pixels),
        TensorSplit(x_test, y_test, pixels),
        num_classes,
    )


def load_data(cfg: DatasetConfig, device: torch.device) -> Data:
    if cfg.name == "imagenet":
        from .imagenet import load_imagenet

        return load_imagenet(cfg, device)
    from .cifar import load_cifar
    from .mnist import load_fashion_mnist, load_mnist
    from .synthetic import make_synthetic

    loaders = {
        "mnist": load_mnist,
        "fashion_mnist": load_fashion_mnist,
        "cifar10": load_cifar,
        "cifar100": load_cifar,
        "synthetic": make_synthetic,
    }
    train, test, num_classes = loaders[cfg.name](cfg)
    return in_memory(cfg, train, test, num_classes, device)
