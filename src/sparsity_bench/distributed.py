"""Data-parallel training over the processes that torchrun starts.

    torchrun --nproc_per_node=2 -m sparsity_bench [overrides]

One run, one run directory: rank 0 resolves the run directory and every rank uses
it; only rank 0 writes TensorBoard events, checkpoints and results.json, and every
rank resumes from rank 0's checkpoint.

The batches are those of one process: ``train.batch_size`` is the global batch, so a
run's schedule (steps per epoch, learning rate) does not depend on the number of
processes. Every rank draws the same permutation of the training set from the shared
seed and trains on its own contiguous slice of each batch (the slices are disjoint and
together make the batch). Each rank weights its loss by its share of the batch, and
the gradients are summed over the ranks, so every step follows the gradient of the
batch's mean loss, exactly as in one process, also when a batch does not split evenly.
Each rank adds the method's full penalty to its loss; weighted by the shares, which
sum to 1, the penalty counts once. Penalties scaled by 1/N (L0) use the full
training-set size, as every rank holds the whole data set.

Why one all-reduce of the gradients after backward, and not DistributedDataParallel:
the methods change the model's parameters between phases (L0 adds log_alpha through
torch.nn.utils.parametrize and detach bakes the gates into new weights; TD
parametrizes weight), so DDP would have to be rebuilt around each phase's parameters,
and the loop would call the DDP wrapper for forward but the plain model for
everything else (penalties, masks, FLOPs, checkpoints). A flat all-reduce after
backward works with whatever a method did to the model, and it comes before gradient
masking and clipping, which then see the full gradient. It gives up overlapping the
communication with backward, which matters little for models of this size.

Randomness: every rank starts from the same seed, so the initial weights, L0's gate
samples and TD's drop masks agree across ranks, and a step's whole batch shares one
gate sample as in one process (L0 with method.per_example draws per local example).
Parameters and buffers are broadcast from rank 0 when a phase starts and after every
epoch: ranks cannot drift apart, and batch-norm running statistics (per rank during
an epoch, as with DDP without SyncBatchNorm) are rank 0's.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks; with world == 1 every operation is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- training
    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's contiguous slice of a global batch, and its share of the batch's examples.

        A rank left without examples (a batch smaller than the number of ranks) gets one
        example with share 0: it still runs forward and backward, so its random draws stay
        in step with the other ranks, and contributes nothing.
        """
        if self.world == 1:
            return x, y, 1.0
        n = len(y)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        if hi == lo:
            return x[:1], y[:1], 0.0
        return x[lo:hi], y[lo:hi], (hi - lo) / n

    def sum_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks, one flat all-reduce per dtype.

        A gradient that backward left unset counts as zero, so that every rank sends the
        same tensors.
        """
        if self.world == 1:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        self._all_reduce_flat(grads)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The tensor summed over the ranks (in place)."""
        if self.world > 1:
            dist.all_reduce(value)
        return value

    @torch.no_grad()
    def broadcast_model(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.world == 1:
            return
        tensors = [t for t in (*model.parameters(), *model.buffers()) if t.numel()]
        for group in _by_kind(tensors).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            _unflatten_into(flat, group)

    def _all_reduce_flat(self, tensors: list[torch.Tensor]) -> None:
        for group in _by_kind(tensors).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            _unflatten_into(flat, group)

    # ---------------------------------------------------------------- coordination
    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=_COORD)

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (a download, files written once), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def share_from_main(self, value: Any) -> Any:
        """Rank 0's value (any picklable object) on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=_COORD)
        return box[0]

    def first_problem(self, problem: str | None) -> str | None:
        """The first problem any rank found (None when none did), the same on every rank."""
        if self.world == 1:
            return problem
        found: list[str | None] = [None] * self.world
        dist.all_gather_object(found, problem, group=_COORD)
        for rank, p in enumerate(found):
            if p is not None:
                return p if rank == 0 else f"rank {rank}: {p}"
        return None

    def device_problem(self, device: str) -> str | None:
        """Why this rank cannot run on `device` (every rank needs a GPU of its own), or None."""
        uses_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if self.world > 1 and uses_cuda and self.local_rank >= torch.cuda.device_count():
            return (
                f"torchrun started more processes per node than there are GPUs ({torch.cuda.device_count()}): "
                "give --nproc_per_node at most the number of GPUs, or run with device=cpu."
            )
        return None


def _by_kind(tensors: list[torch.Tensor]) -> dict[tuple, list[torch.Tensor]]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return groups


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


_CURRENT = Dist()
# Barriers and small Python objects go through gloo, whatever carries the tensors: with
# NCCL they would need a GPU per rank, which a device=cpu run need not have.
_COORD: dist.ProcessGroup | None = None


def current() -> Dist:
    """This process's Dist: a single process unless setup() joined a torchrun group."""
    return _CURRENT


def setup() -> Dist:
    """Join the process group that torchrun's environment describes (RANK, WORLD_SIZE, MASTER_ADDR...).

    Gloo carries CPU tensors and, where CUDA is available, NCCL carries GPU tensors, so
    device=cpu and device=cuda both work; each rank uses the GPU of its local rank.
    """
    global _CURRENT, _COORD
    if not launched() or dist.is_initialized():
        return _CURRENT
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        backend = "cpu:gloo,cuda:nccl"
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)  # torch.device("cuda") is this rank's GPU from now on
    dist.init_process_group(backend)
    _COORD = dist.new_group(backend="gloo") if backend != "gloo" else None  # None: the default group
    _CURRENT = Dist(rank, world, local_rank)
    return _CURRENT


def teardown(wait: bool = True) -> None:
    """Leave the process group; with wait, once every rank got here (rank 0 may still be measuring speed).

    After an error wait=False: the other ranks may be inside a collective that a
    barrier would be mistaken for.
    """
    global _CURRENT, _COORD
    if dist.is_initialized():
        try:
            if wait:
                dist.barrier(group=_COORD)
        finally:
            dist.destroy_process_group()
    _CURRENT, _COORD = Dist(), None
