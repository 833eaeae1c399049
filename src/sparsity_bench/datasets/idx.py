"""Write the IDX files that torchvision.datasets.MNIST reads (LeCun's format)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

_UBYTE = 0x08


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, the type code (0x08 = ubyte), the rank, big-endian int32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, _UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(array.tobytes())


def read_idx(path: Path) -> np.ndarray:
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def check_idx(path: Path) -> None:
    """Raise ValueError if the file's size disagrees with its own header (a truncated copy)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _UBYTE:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        ndim = head[3]
        dims = f.read(4 * ndim)
    if len(dims) != 4 * ndim:
        raise ValueError(f"{path} is truncated inside its header")
    expected = 4 + 4 * ndim + int(np.prod(struct.unpack(f">{ndim}I", dims)))
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path} has {size} bytes where its header promises {expected}")
