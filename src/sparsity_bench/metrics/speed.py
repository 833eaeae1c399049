"""Measured inference speed: the masked (dense-shaped) model against its slimmed copy.

Timing rules: eval mode under torch.inference_mode, warm-up calls first, then
`repeats` timed rounds whose median is reported; each round runs the model
enough times to last about a millisecond (timer resolution and Python overhead
matter at batch 1), and the dense and slimmed models alternate round by round so
that a machine shared with other work slows both alike. The speedup is the median
of the rounds' paired ratios (dense round / the slim round right after it), and
the quartiles of those ratios say how steady the machine was: on a busy one they
spread, and a speedup whose quartiles lie more than UNSTEADY times apart is flagged
rather than trusted. On CUDA the device is synchronized before the clock is read.
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable, Sequence

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _calls_per_round(fn: Callable[[], object], device: torch.device, target_s: float = 1e-3) -> int:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(1000, int(target_s / once)))


# Upper / lower quartile of the paired ratios beyond which a speedup is not trusted: measured
# 1.17 on a quiet 2-core machine, 1.9-8.7 with other runs on its cores.
UNSTEADY = 1.5


def time_rounds(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each function in each round, the functions interleaved round by round."""
    for fn in fns.values():
        for _ in range(max(warmup, 1)):
            fn()
    number = {k: _calls_per_round(fn, device) for k, fn in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(repeats, 1)):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(number[k]):
                fn()
            _sync(device)
            samples[k].append(1e3 * (time.perf_counter() - t0) / number[k])
    return samples


def _medians(rounds: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in rounds.items()}


def time_calls(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each function, interleaving them round by round."""
    return _medians(time_rounds(fns, device, repeats, warmup))


def paired_speedup(dense_ms: Sequence[float], slim_ms: Sequence[float]) -> dict:
    """Median of the round-by-round ratios dense / slim, their quartiles, and whether they agree."""
    ratios = sorted(d / s for d, s in zip(dense_ms, slim_ms))
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4)
    else:
        low, high = ratios[0], ratios[-1]
    return {"speedup": statistics.median(ratios), "speedup_quartiles": [low, high], "steady": high <= UNSTEADY * low}


def _batch(examples: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(size, device=examples.device) % examples.shape[0]
    return examples[idx].to(device)


@torch.inference_mode()
def model_speed(
    dense: nn.Module, slim: nn.Module, examples: torch.Tensor, device: torch.device,
    batch_sizes: Sequence[int] = (1, 256), repeats: int = 20, warmup: int = 3,
) -> dict:
    """{batch_<n>: {dense_ms, slim_ms, speedup, speedup_quartiles, steady, dense_per_s, slim_per_s}} on `device`.

    examples: real inputs, repeated as needed to fill a batch. The models are
    copied to `device` and timed in eval mode; the originals are left as they were.
    """  # fmt: skip
    table: dict = {"device": str(device), "threads": torch.get_num_threads(), "repeats": repeats}
    models = {}
    for name, m in (("dense", dense), ("slim", slim)):
        was = m.training
        models[name] = (m, was, next(m.parameters()).device)
        m.eval().to(device)
    try:
        for b in batch_sizes:
            x = _batch(examples, b, device)
            rounds = time_rounds({k: (lambda m=m: m(x)) for k, (m, _, _) in models.items()}, device, repeats, warmup)
            ms = _medians(rounds)
            table[f"batch_{b}"] = {
                "dense_ms": ms["dense"], "slim_ms": ms["slim"], **paired_speedup(rounds["dense"], rounds["slim"]),
                "dense_per_s": 1e3 * b / ms["dense"], "slim_per_s": 1e3 * b / ms["slim"],
            }  # fmt: skip
    finally:
        for m, was, where in models.values():
            m.to(where).train(was)
    return table


@torch.inference_mode()
def csr_linear_speed(
    model: nn.Module, examples: torch.Tensor, device: torch.device, batch: int = 256, repeats: int = 20, warmup: int = 3,
) -> dict | None:
    """Element-wise sparsity on the Linear layers: dense W @ X against CSR W @ X at `batch`.

    Both compute the layer's product W @ X^T (bias left out) with the layer's real
    input; per-layer and summed milliseconds. None when no Linear layer has a zero.
    """  # fmt: skip
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and bool((m.weight == 0).any())
    ]  # fmt: skip
    if not hooks:
        return None
    was, where = model.training, next(model.parameters()).device
    model.eval().to(device)
    try:
        model(_batch(examples, batch, device))
    finally:
        for h in hooks:
            h.remove()
        model.to(where).train(was)
    modules = dict(model.named_modules())
    layers = {}
    for name, x in inputs.items():
        w = modules[name].weight.detach().to(device)
        xt = x.reshape(x.shape[0], -1).t().contiguous()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            w_csr = w.to_sparse_csr()
        ms = time_calls({"dense": lambda: w @ xt, "csr": lambda: w_csr @ xt}, device, repeats, warmup)
        layers[name] = {"density": float((w != 0).float().mean()), "dense_ms": ms["dense"], "csr_ms": ms["csr"]}
    dense_ms = sum(r["dense_ms"] for r in layers.values())
    csr_ms = sum(r["csr_ms"] for r in layers.values())
    return {
        "batch": batch, "dense_ms": dense_ms, "csr_ms": csr_ms,
        "speedup": dense_ms / csr_ms, "beats_dense": csr_ms < dense_ms, "layers": layers,
    }  # fmt: skip
