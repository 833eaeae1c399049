"""Cost of Targeted Dropout training against dense training (method=none), as a ratio.

Times the pipeline's training step (forward, cross-entropy + penalty, backward,
Adam, method.step) on MNIST-shaped batches, for none and the td variants. All
models are built up front and timed in short interleaved rounds, so that load from
other processes hits every variant alike; the ratio to none is taken within each
round and the median over rounds is reported.

    python scripts/td_speed.py [--rounds 200] [--steps 5] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sparsity_bench.config import LeNet5Config, LeNet300Config, NoneConfig, TDConfig
from sparsity_bench.methods import build_method
from sparsity_bench.models import build_model

MODELS = {"lenet300": LeNet300Config, "lenet5": LeNet5Config}
VARIANTS = {
    "none": NoneConfig(),
    "td weight": TDConfig(variant="weight", gamma=0.5, alpha=0.5),
    "td unit": TDConfig(variant="unit", gamma=0.5, alpha=0.5),
    "td unit/w": TDConfig(variant="unit", gamma=0.5, alpha=0.5, unit_drop="weight"),
}


def make_trainer(model_name: str, method_cfg, args, x: torch.Tensor, y: torch.Tensor):
    """A function running n training steps of one configuration."""
    torch.manual_seed(0)
    model = build_model(MODELS[model_name](), (1, 28, 28), 10).to(args.device)
    method = build_method(method_cfg, len(y), (1, 28, 28))
    method.attach(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    state = {"step": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(len(y), (args.batch_size,), device=x.device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            pen = method.penalty(model)
            if pen is not None:
                loss = loss + pen
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            method.step(min(1.0, state["step"] / 1000))
        if x.is_cuda:
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5, help="training steps per variant and round")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5000, 1, 28, 28, generator=g).to(args.device)
    y = torch.randint(10, (5000,), generator=g).to(args.device)
    print(f"batch {args.batch_size} on {args.device}, {args.threads} thread(s), {args.rounds} rounds of {args.steps} steps")
    for model in args.models:
        trainers = {name: make_trainer(model, cfg, args, x, y) for name, cfg in VARIANTS.items()}
        for run in trainers.values():
            run(3)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, run in trainers.items():
                t0 = time.perf_counter()
                run(args.steps)
                times[name].append((time.perf_counter() - t0) / args.steps)
        for name, ts in times.items():
            ratio = statistics.median(t / t0 for t, t0 in zip(ts, times["none"]))
            print(f"{model:<9} {name:<10} median {1e3 * statistics.median(ts):7.2f} ms/step   best {1e3 * min(ts):7.2f}"
                  f"   x{ratio:.2f} of none (median of per-round ratios)", flush=True)


if __name__ == "__main__":
    main()
