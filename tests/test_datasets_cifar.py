"""CIFAR-10/100 on small files in the real on-disk format (python pickle batches), end to end."""
import pickle

import numpy as np
import pytest
import torch

from sparsity_bench.cli import preflight
from sparsity_bench.config import (
    Cifar10Config, Cifar100Config, CurveConfig, FinetuneConfig, LeNet5Config, MeasureConfig, NoneConfig, RunConfig, TrainConfig,
)  # fmt: skip
from sparsity_bench.datasets import DataError, load_data
from sparsity_bench.datasets.cifar import torchvision_class, write_cifar
from sparsity_bench.pipeline import Pipeline

CPU = torch.device("cpu")


def _fake(n, num_classes, rng, colors=None):
    """HWC uint8 images; with colors, each class is its own colour plus noise (learnable)."""
    y = rng.integers(0, num_classes, n)
    if colors is None:
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y
    x = colors[y][:, None, None, :] + rng.normal(0, 30, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def _write(root, name="cifar10", n_train=30, n_test=10, colors=None):
    k = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(0)
    train, test = _fake(n_train, k, rng, colors), _fake(n_test, k, rng, colors)
    write_cifar(root, name, train, test, [f"class{i}" for i in range(k)])
    return train, test


def _chw(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name, cfg_cls, files", [
    ("cifar10", Cifar10Config, ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]),
    ("cifar100", Cifar100Config, ["train", "test", "meta"]),
])  # fmt: skip
def test_cifar_files_load_through_torchvision_in_order(tmp_path, name, cfg_cls, files):
    (x, y), (xt, yt) = _write(tmp_path, name)
    folder = tmp_path / torchvision_class(name).base_folder
    assert all((folder / f).is_file() for f in files)
    ds = torchvision_class(name, verify=False)(str(tmp_path), train=True)
    assert np.array_equal(ds.data, x) and ds.targets == y.tolist()  # torchvision reads back what was written

    cfg = cfg_cls(root=str(tmp_path), download=False, verify=False, val_size=8, normalize=False)
    data = load_data(cfg, CPU)
    assert data.num_classes == (10 if name == "cifar10" else 100) and data.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (22, 8, 10)
    assert data.train.x.dtype == torch.uint8  # held as pixels, converted per batch
    assert torch.equal(data.train.x, _chw(x[:22])) and torch.equal(data.val.x, _chw(x[22:]))
    assert torch.equal(data.test.y, torch.from_numpy(yt)) and torch.equal(data.val.y, torch.from_numpy(y[22:]))
    assert torch.equal(data.test.examples(3), _chw(xt[:3]).float() / 255)


def test_augmentation_and_normalisation_of_the_training_split_only(tmp_path):
    (x, _), _ = _write(tmp_path, n_train=40)
    data = load_data(Cifar10Config(root=str(tmp_path), download=False, verify=False, val_size=10), CPU)
    train = x[:30].astype(np.float64) / 255
    mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2), ddof=1)  # the training split alone
    expect = (_chw(x).double() / 255 - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)
    ev = torch.cat([b for b, _ in data.train.batches(16)])
    assert torch.allclose(ev.double(), expect[:30], atol=1e-5)
    g = torch.Generator().manual_seed(0)
    val = torch.cat([b for b, _ in data.val.batches(4, g)])  # shuffled, never augmented
    rows = {tuple(r.tolist()) for r in expect[30:].float().flatten(1).round(decimals=4)}
    assert all(tuple(r.tolist()) in rows for r in val.flatten(1).round(decimals=4))
    aug = torch.cat([b for b, _ in data.train.batches(30, g)])
    assert aug.shape == (30, 3, 32, 32) and not any(torch.allclose(aug[0], e.float()) for e in expect[:30])
    off = load_data(Cifar10Config(root=str(tmp_path), download=False, verify=False, val_size=10, augment=False), CPU)
    assert off.train.augment is None
    assert torch.equal(next(off.train.batches(30, torch.Generator().manual_seed(0)))[0].sort(0)[0], ev.sort(0)[0])


def test_checksum_mismatch_missing_and_corrupt_files_are_one_sentence(tmp_path, monkeypatch):
    _write(tmp_path)
    with pytest.raises(DataError, match="checksums.*dataset.verify=false") as err:
        load_data(Cifar10Config(root=str(tmp_path), download=False), CPU)  # verify=true: torchvision's MD5s
    assert "\n" not in str(err.value)

    empty = tmp_path / "empty"
    with pytest.raises(DataError, match=r"CIFAR-100 is not in .*cifar-100-python and dataset\.download=false; put") as err:
        load_data(Cifar100Config(root=str(empty), download=False), CPU)
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", (tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(DataError, match="torchvision could not download it.*unpack cifar-10-python.tar.gz") as err:
        load_data(Cifar10Config(root=str(empty), download=True), CPU)
    assert "\n" not in str(err.value)

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot be read"):
        load_data(Cifar10Config(root=str(tmp_path), download=False, verify=False), CPU)
    with open(batch, "wb") as f:  # a readable pickle with the wrong content
        pickle.dump({"data": np.zeros((3, 7), np.uint8), "labels": [0, 1, 2]}, f)
    with pytest.raises(DataError, match="cannot be read"):
        load_data(Cifar10Config(root=str(tmp_path), download=False, verify=False), CPU)


def test_cifar_configs_compose_from_the_command_line():
    assert preflight(["dataset=cifar10", "model=lenet5", "dataset.augment=false", "dataset.verify=false"]) is None
    assert preflight(["dataset=cifar100", "dataset.crop_padding=0", "dataset.flip=false"]) is None
    assert "dataset.crop_padding must be >= 0" in preflight(["dataset=cifar10", "dataset.crop_padding=-1"])


def test_lenet5_trains_on_fake_cifar_through_the_pipeline(tmp_path):
    colors = np.random.default_rng(7).integers(0, 256, size=(10, 3))
    _write(tmp_path / "data", n_train=350, n_test=100, colors=colors)
    cfg = RunConfig(
        model=LeNet5Config(),
        dataset=Cifar10Config(root=str(tmp_path / "data"), download=False, verify=False, val_size=50),
        method=NoneConfig(),
        train=TrainConfig(epochs=2, batch_size=50),
        finetune=FinetuneConfig(epochs=1, batch_size=50),
        curve=CurveConfig(fractions=[]),
        measure=MeasureConfig(speed=False),
        threads=1,
        progress=False,
        histograms=False,
    )
    pipe = Pipeline(cfg, tmp_path / "run", {})
    results = pipe.run()
    assert pipe.data.input_shape == (3, 32, 32) and len(pipe.data.train) == 300
    assert results["status"] == "finished"
    assert results["final"]["architecture"] == "20-50-1250-500"  # LeNet-5 sized for 3x32x32 inputs, unpruned
    assert results["phases"]["train"]["test_acc"] > 0.5  # colour classes: learnable only if labels follow their images
    assert results["final"]["slim_max_abs_diff"] is not None
