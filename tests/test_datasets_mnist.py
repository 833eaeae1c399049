"""MNIST and Fashion-MNIST as uint8 pixels on the device; Fashion-MNIST's missing-data sentences."""
import numpy as np
import pytest
import torch

from sparsity_bench.cli import preflight
from sparsity_bench.config import FashionMnistConfig, MnistConfig
from sparsity_bench.datasets import DataError, load_data
from sparsity_bench.datasets.idx import write_idx
from sparsity_bench.datasets.mnist import IDX_FILES

CPU = torch.device("cpu")


def _write_idx_set(raw, n_train=12, n_test=5):
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(raw / name, a)
    return arrays


@pytest.mark.parametrize("cfg_cls, folder", [(MnistConfig, "MNIST"), (FashionMnistConfig, "FashionMNIST")])
def test_idx_sets_are_held_as_uint8_and_served_as_floats(tmp_path, cfg_cls, folder):
    arrays = _write_idx_set(tmp_path / folder / "raw")
    data = load_data(cfg_cls(root=str(tmp_path), download=False, verify=False, val_size=2), CPU)
    images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).unsqueeze(1)
    assert data.train.x.dtype == torch.uint8 and torch.equal(data.train.x, images[:10])
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    x, y = next(data.train.batches(100))
    assert torch.equal(x, images[:10].float().div(255.0))  # the exact floats the float32 storage held
    assert y.tolist() == arrays["train-labels-idx1-ubyte"][:10].tolist()
    assert torch.equal(data.test.examples(5), torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).unsqueeze(1).float() / 255)


def test_fashion_mnist_sentences(tmp_path, monkeypatch):
    import torchvision

    raw = tmp_path / "FashionMNIST" / "raw"
    with pytest.raises(DataError, match=f"Fashion-MNIST is not in {raw} and dataset.download=false; put its four IDX files"):
        load_data(FashionMnistConfig(root=str(tmp_path), download=False), CPU)
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [(tmp_path / "nowhere").as_uri() + "/"])
    with pytest.raises(DataError, match=f"Fashion-MNIST is not in {raw} and torchvision could not download it") as err:
        load_data(FashionMnistConfig(root=str(tmp_path), download=True), CPU)
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in IDX_FILES)
    _write_idx_set(raw)
    with pytest.raises(DataError, match="holds 12 labels where the original has 60000.*verify=false"):
        load_data(FashionMnistConfig(root=str(tmp_path), download=False, val_size=2), CPU)
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:-5])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is corrupt"):
        load_data(FashionMnistConfig(root=str(tmp_path), download=False, verify=False, val_size=2), CPU)
    assert preflight(["dataset=fashion_mnist", "model=lenet5", "dataset.augment=true"]) is None
