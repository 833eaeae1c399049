"""CIFAR-10 and CIFAR-100 through torchvision, as uint8 images [N, 3, 32, 32].

torchvision reads the "python version" batches (<root>/cifar-10-batches-py/,
<root>/cifar-100-python/), downloads them when asked, and checks every file's MD5.
dataset.verify=false keeps its reader but checks only that the files exist, for
re-packed copies. write_cifar writes the same format, for subsets and tests.
"""
from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..config import DatasetConfig
from . import DataError, dataset_root

TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def torchvision_class(name: str, verify: bool = True):
    """torchvision's CIFAR10/CIFAR100, or a subclass of it whose file checks ignore checksums."""
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    return cls if verify else _unverified(cls)


@lru_cache(maxsize=None)
def _unverified(cls):
    # torchvision's check_integrity(path, md5=None) checks only that the file exists.
    return type(f"Unverified{cls.__name__}", (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })  # fmt: skip


def file_names(cls) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def load_cifar(cfg: DatasetConfig):
    root, title = dataset_root(cfg), TITLES[cfg.name]
    cls = torchvision_class(cfg.name, cfg.verify)
    folder = root / cls.base_folder
    files = ", ".join(file_names(cls))
    if not all((folder / f).is_file() for f in file_names(cls)):
        if not cfg.download:
            raise DataError(
                f"{title} is not in {folder} and dataset.download=false; put the python-version files ({files}) there, "
                f"e.g. by unpacking {cls.filename} in {root}, or allow the download."
            )
        try:
            cls(str(root), train=True, download=True)
        except Exception as err:
            raise DataError(
                f"{title} is not in {folder} and torchvision could not download it ({type(err).__name__}); "
                f"unpack {cls.filename} in {root} so that {folder} holds {files}."
            ) from None
    try:
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except RuntimeError as err:  # torchvision: "not found or corrupted" = a checksum mismatch here
        raise DataError(
            f"{title} files in {folder} do not match torchvision's checksums ({err}); delete them and run again "
            "to download fresh copies, or set dataset.verify=false for a re-packed copy."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{title} files in {folder} cannot be read ({type(err).__name__}: {err}); replace them.") from None

    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # torchvision keeps HWC
        y = torch.tensor(ds.targets, dtype=torch.long)
        if len(x) != len(y):
            raise DataError(f"{title} files in {folder} hold {len(x)} images but {len(y)} labels; replace them.")
        return x, y

    return tensors(train), tensors(test), len(train.classes)


def write_cifar(root: Path, name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], classes: list[str]) -> Path:
    """Write images (uint8 [N, 32, 32, 3]) and labels in the python-version format torchvision reads.

    CIFAR-10: data_batch_1..5 (the training images in order, split in five), test_batch,
    batches.meta; CIFAR-100: train, test, meta.
    Each file is a pickled dict with `data` = uint8 [n, 3072] (channel-major rows) and the labels.
    """
    cls = torchvision_class(name)
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def dump(file: str, x: np.ndarray, y: np.ndarray) -> None:
        rows = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(x), -1))
        with open(folder / file, "wb") as f:
            pickle.dump({"data": rows, label_key: [int(v) for v in y]}, f, protocol=2)

    train_files = [f for f, _ in cls.train_list]
    for file, idx in zip(train_files, np.array_split(np.arange(len(train[0])), len(train_files))):
        dump(file, train[0][idx], train[1][idx])
    dump(cls.test_list[0][0], *test)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: list(classes)}, f, protocol=2)
    return folder
