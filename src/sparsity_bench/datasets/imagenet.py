"""ImageNet (ILSVRC-2012) in class folders, streamed from disk through DataLoader workers.

Layout: <folder>/train/<class>/*.JPEG and <folder>/val/<class>/*.JPEG, where
<folder> is dataset.root, else <default data root>/imagenet. The official
validation images are the test split; the validation split is dataset.val_size
training images held out by a fixed random choice (the same for every seed; the
folders are sorted by class, so their last images would be a single class), and
dataset.limit takes the first training images of that same order.

Workers decode, crop and flip on the CPU and hand over uint8 tensors; the
conversion to float and the normalisation happen on the run device.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..config import ImageNetConfig
from . import Data, DataError, default_root, split_sizes
from .splits import Pixels, StreamSplit

MEAN = (0.485, 0.456, 0.406)  # the usual ImageNet statistics, of the RGB pixels in [0, 1]
STD = (0.229, 0.224, 0.225)
HOLDOUT_SEED = 0  # which training images form the validation split


def open_rgb(path: str):
    """ImageFolder's loader, with a sentence for a file that is not a readable image."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"ImageNet file {path} cannot be read as an image ({type(err).__name__}); replace or remove it.") from None


def transforms(cfg: ImageNetConfig):
    """(training, evaluation) transforms of a PIL image to a uint8 [3, crop, crop] tensor."""
    from torchvision import transforms as T

    evaluation = T.Compose([T.Resize(cfg.resize_size), T.CenterCrop(cfg.crop_size), T.PILToTensor()])
    if not cfg.augment:
        return evaluation, evaluation
    training = T.Compose([T.RandomResizedCrop(cfg.crop_size), T.RandomHorizontalFlip(), T.PILToTensor()])
    return training, evaluation


def _image_folder(path: Path, transform):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform, loader=open_rgb)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DataError(f"ImageNet folder {path} is not laid out as <class>/<image> ({err}); sort its images into class folders.") from None


def load_imagenet(cfg: ImageNetConfig, device: torch.device) -> Data:
    folder = Path(cfg.root).expanduser() if cfg.root else default_root() / "imagenet"
    train_dir, test_dir = folder / "train", folder / "val"
    if not (train_dir.is_dir() and test_dir.is_dir()):
        raise DataError(
            f"ImageNet is not in {folder} (torchvision cannot download it); put the ILSVRC-2012 images there in class "
            f"folders, {train_dir}/<class>/*.JPEG and {test_dir}/<class>/*.JPEG, or point dataset.root at such a folder."
        )
    training, evaluation = transforms(cfg)
    train_eval = _image_folder(train_dir, evaluation)
    test = _image_folder(test_dir, evaluation)
    if test.classes != train_eval.classes:
        raise DataError(
            f"ImageNet's {test_dir} has {len(test.classes)} class folders and {train_dir} has {len(train_eval.classes)}, "
            "or their names differ; both need the same class folders."
        )
    train_aug = copy.copy(train_eval)  # the same file list, read with the training transform
    train_aug.transform = training

    n = len(train_eval)
    n_train, n_val = split_sizes(n, cfg)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    train_idx, val_idx = order[:n_train], order[n - n_val :]

    pixels = Pixels()
    if cfg.normalize:
        as_channels = lambda v: torch.tensor(v, device=device).view(1, -1, 1, 1)  # noqa: E731
        pixels = Pixels(as_channels(MEAN), as_channels(STD))
    shape = (3, cfg.crop_size, cfg.crop_size)

    def split(view, idx, augmented=None):
        return StreamSplit(view if idx is None else Subset(view, idx), shape, device, cfg.workers, pixels, augmented)

    return Data(
        cfg.name,
        split(train_eval, train_idx, Subset(train_aug, train_idx) if cfg.augment else None),
        split(train_eval, val_idx),
        split(test, None),
        len(train_eval.classes),
    )
