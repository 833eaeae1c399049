"""Datasets as tensors on the run device, served in batches without per-sample Python."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..config import DatasetConfig


from ..errors import DataError  # noqa: F401  (re-exported)


@dataclass
class Split:
    x: torch.Tensor  # float32 [N, C, H, W], already on the run device
    y: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return self.y.shape[0]

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive batches; shuffled by a fresh permutation when a generator is given."""
        n = len(self)
        if generator is None:
            for i in range(0, n, batch_size):
                yield self.x[i : i + batch_size], self.y[i : i + batch_size]
            return
        order = torch.randperm(n, device=self.y.device, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def default_root() -> Path:
    """$SPARSITY_BENCH_DATA, else data/ of the source checkout, else ~/.cache/sparsity_bench."""
    if env := os.environ.get("SPARSITY_BENCH_DATA"):
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path.home() / ".cache" / "sparsity_bench"


def split_train_val(x: torch.Tensor, y: torch.Tensor, cfg: DatasetConfig) -> tuple[Split, Split]:
    """Validation = the last val_size training examples; train = the first `limit` of the rest."""
    n_val = cfg.val_size
    if n_val >= len(y):
        raise DataError(f"dataset.val_size={n_val} leaves no training examples out of {len(y)}; lower it.")
    n_train = len(y) - n_val
    if cfg.limit is not None:
        n_train = min(n_train, cfg.limit)
    return Split(x[:n_train], y[:n_train]), Split(x[len(y) - n_val :], y[len(y) - n_val :])


def load_data(cfg: DatasetConfig, device: torch.device) -> Data:
    from .mnist import load_mnist
    from .synthetic import make_synthetic

    loaders = {"mnist": load_mnist, "synthetic": make_synthetic}
    (x_train, y_train), (x_test, y_test), num_classes = loaders[cfg.name](cfg)
    x_train, x_test = x_train.to(device), x_test.to(device)
    y_train, y_test = y_train.to(device), y_test.to(device)
    train, val = split_train_val(x_train, y_train, cfg)
    if cfg.normalize:  # per-channel statistics of the training split only
        mean = train.x.mean(dim=(0, 2, 3), keepdim=True)
        std = train.x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        train, val = Split((train.x - mean) / std, train.y), Split((val.x - mean) / std, val.y)
        x_test = (x_test - mean) / std
    return Data(cfg.name, train, val, Split(x_test, y_test), num_classes)
