"""The one small interface the pipeline sees, and its two kinds of split.

- ``batches(batch_size, generator)``: with a generator, the training order (a fresh
  shuffle drawn from it, augmented when the split augments); without one, the
  evaluation order (in order, never augmented). Batches arrive on the run device
  as float32 model inputs and int64 labels.
- ``examples(n)``: the first n inputs, as evaluation sees them.
- ``len()`` and ``input_shape``.

TensorSplit holds a small set on the run device (uint8 pixels converted per batch,
or float inputs used as they are); StreamSplit reads a large one from disk through
DataLoader workers. All randomness comes from the generator handed to batches, or
from a generator seeded by it, so a resumed run sees the same batches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


class Split(Protocol):
    input_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]: ...

    def examples(self, n: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class Pixels:
    """uint8 pixels -> float32 in [0, 1], then (x - mean) / std per channel when normalising."""

    mean: torch.Tensor | None = None  # [1, C, 1, 1] in [0, 1] units, on the run device
    std: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x  # already model inputs
        x = x.float().div_(255.0)
        if self.mean is not None:
            x = x.sub_(self.mean).div_(self.std)
        return x


@dataclass
class TensorSplit:
    x: torch.Tensor  # [N, C, H, W] on the run device: uint8 pixels, or float32 inputs ready for the model
    y: torch.Tensor  # int64 [N]
    pixels: Pixels = Pixels()
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None  # training order only

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        n = len(self)
        if generator is None:
            for i in range(0, n, batch_size):
                yield self.pixels(self.x[i : i + batch_size]), self.y[i : i + batch_size]
            return
        order = torch.randperm(n, device=self.y.device, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = self.x.index_select(0, idx)  # several times faster than x[idx] on CPUs
            if self.augment is not None:
                x = self.augment(x, generator)
            yield self.pixels(x), self.y.index_select(0, idx)

    def examples(self, n: int) -> torch.Tensor:
        return self.pixels(self.x[:n])


class StreamSplit:
    """Examples read by DataLoader workers (uint8 [C, H, W] tensors), copied to the device
    from pinned memory without blocking, converted there."""

    def __init__(
        self,
        dataset: Dataset,  # the evaluation view
        input_shape: tuple[int, ...],
        device: torch.device,
        workers: int,
        pixels: Pixels,
        augmented: Dataset | None = None,  # the training view of the same examples, if it differs
    ):
        self.dataset, self.augmented = dataset, augmented
        self.input_shape = tuple(input_shape)
        self.device, self.workers, self.pixels = device, workers, pixels

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        if generator is None:
            yield from self._stream(self.dataset, batch_size, None)
            return
        # The loader's own generator orders the examples and seeds its workers' transforms.
        seed = int(torch.randint(0, 2**62, (), device=generator.device, generator=generator))
        loader_gen = torch.Generator().manual_seed(seed)
        yield from self._stream(self.augmented if self.augmented is not None else self.dataset, batch_size, loader_gen)

    def examples(self, n: int) -> torch.Tensor:
        x, _ = next(self._stream(Subset(self.dataset, range(min(n, len(self)))), max(n, 1), None, workers=0))
        return x

    def _stream(self, dataset: Dataset, batch_size: int, generator: torch.Generator | None, workers: int | None = None) -> Iterator[Batch]:
        workers = self.workers if workers is None else workers
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
            num_workers=workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        batches = iter(loader)
        if workers == 0 and generator is not None:
            batches = _own_rng(batches, generator)
        try:
            for x, y in batches:
                yield self.pixels(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)
        except DataError as err:  # raised in a worker: keep the sentence, not the worker's traceback
            raise DataError(_last_sentence(str(err))) from None


def _own_rng(batches: Iterator, generator: torch.Generator) -> Iterator:
    """Run the transforms of in-process loading on their own RNG stream, seeded from `generator`,
    as DataLoader seeds its workers: the run's global RNG (dropout, gates) never sees them."""
    state = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=generator))).get_state()
    while True:
        outside = torch.get_rng_state()
        torch.set_rng_state(state)
        try:
            batch = next(batches, None)
        finally:
            state = torch.get_rng_state()
            torch.set_rng_state(outside)
        if batch is None:
            return
        yield batch


def _last_sentence(message: str) -> str:
    last = message.strip().splitlines()[-1] if message.strip() else message
    return re.sub(r"^[\w.]*DataError: ", "", last)
