"""ImageNet in class folders of small JPEGs, streamed through DataLoader workers."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from sparsity_bench.config import ImageNetConfig
from sparsity_bench.datasets import DataError, load_data
from sparsity_bench.datasets.imagenet import MEAN, STD

CPU = torch.device("cpu")
CLASSES = ["n01440764", "n01443537", "n01484850"]


def _write(root, per_class_train=4, per_class_val=2):
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(36, 60, 2)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{i}.JPEG", quality=95)


def _cfg(root, **kw):
    return ImageNetConfig(root=str(root), **{"val_size": 3, "crop_size": 32, "resize_size": 36, "workers": 0, **kw})


def _expected_eval(paths):
    """The evaluation transform, applied by hand with torchvision: resize, centre crop, [0, 1], normalise."""
    tf = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize(MEAN, STD)])
    return torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])


def test_class_folders_stream_as_evaluation_batches(tmp_path):
    _write(tmp_path)
    data = load_data(_cfg(tmp_path), CPU)
    assert data.num_classes == 3 and data.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 6)
    xs, ys = zip(*data.test.batches(4))
    assert [len(y) for y in ys] == [4, 2]
    test_paths = sorted((tmp_path / "val").glob("*/*.JPEG"))
    assert torch.cat(ys).tolist() == [CLASSES.index(p.parent.name) for p in test_paths]
    assert torch.allclose(torch.cat(xs), _expected_eval(test_paths), atol=1e-5)
    assert torch.allclose(data.test.examples(2), _expected_eval(test_paths[:2]), atol=1e-5)
    # the held-out validation images are training images, disjoint from the training split
    val_paths = {p for p, _ in (data.val.dataset.dataset.samples[i] for i in data.val.dataset.indices)}
    train_paths = {p for p, _ in (data.train.dataset.dataset.samples[i] for i in data.train.dataset.indices)}
    assert not val_paths & train_paths and len(val_paths | train_paths) == 12
    limited = load_data(_cfg(tmp_path, limit=5), CPU)
    assert len(limited.train) == 5 and limited.val.dataset.indices == data.val.dataset.indices


@pytest.mark.parametrize("workers", [0, 1])
def test_training_batches_are_augmented_reproducibly_and_validation_is_not(tmp_path, workers):
    _write(tmp_path)
    data = load_data(_cfg(tmp_path, workers=workers), CPU)

    def epoch(seed):
        batches = list(data.train.batches(4, torch.Generator().manual_seed(seed)))
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    torch.manual_seed(0)
    before = torch.get_rng_state()
    (x1, y1), (x2, y2), (x3, _) = epoch(0), epoch(0), epoch(1)
    assert torch.equal(torch.get_rng_state(), before)  # the run's global RNG (dropout, gates) is not drawn from
    labels = sorted(data.train.dataset.dataset.targets[i] for i in data.train.dataset.indices)
    assert x1.shape == (9, 3, 32, 32) and x1.dtype == torch.float32 and sorted(y1.tolist()) == labels
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # the generator alone decides order and crops
    assert not torch.equal(x1, x3)
    lo, hi = (0 - max(MEAN)) / min(STD), (1 - min(MEAN)) / min(STD)
    assert lo - 1e-5 <= x1.min() and x1.max() <= hi + 1e-5
    evaluation = torch.cat([x for x, _ in data.train.batches(9)])
    assert not any(torch.allclose(a, b, atol=1e-4) for a in x1 for b in evaluation)  # random resized crops
    val = torch.cat([x for x, _ in data.val.batches(3, torch.Generator().manual_seed(0))])
    plain = torch.cat([x for x, _ in data.val.batches(3)])
    assert all(any(torch.equal(a, b) for b in plain) for a in val)  # shuffled, not augmented


def test_missing_mismatched_and_corrupt_imagenet_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match=r"ImageNet is not in .*cannot download it.*train/<class>/\*\.JPEG") as err:
        load_data(_cfg(tmp_path / "none"), CPU)
    assert "\n" not in str(err.value)
    _write(tmp_path)
    (tmp_path / "val" / CLASSES[0]).rename(tmp_path / "val" / "n99999999")
    with pytest.raises(DataError, match="same class folders"):
        load_data(_cfg(tmp_path), CPU)
    (tmp_path / "val" / "n99999999").rename(tmp_path / "val" / CLASSES[0])
    bad = sorted((tmp_path / "val").glob("*/*.JPEG"))[1]
    bad.write_bytes(b"not a jpeg")
    for workers in (0, 1):  # the sentence comes through from a worker process too
        data = load_data(_cfg(tmp_path, workers=workers), CPU)
        with pytest.raises(DataError, match=f"^ImageNet file {bad} cannot be read as an image") as err:
            list(data.test.batches(4))
        assert "\n" not in str(err.value)
