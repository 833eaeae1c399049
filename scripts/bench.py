"""Training-speed benchmark, printed as ratios (these machines are too noisy for absolute times).

1. Runner overhead: the pipeline's training loop (method=none) against a minimal
   hand-written PyTorch loop over the same in-memory tensors, batch size and threads.
2. Method cost: every registered method's training throughput against method=none.

    python scripts/bench.py                      # LeNet-300-100 and LeNet-5 on MNIST
    python scripts/bench.py --models lenet300 --epochs 2 --limit 10000 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsity_bench.accel import Accel
from sparsity_bench.config import (
    SCHEMAS, CurveConfig, Device, FinetuneConfig, MeasureConfig, MnistConfig, RunConfig, SyntheticConfig, TrainConfig,
)  # fmt: skip
from sparsity_bench.datasets import load_data
from sparsity_bench.methods import METHODS
from sparsity_bench.models import build_model
from sparsity_bench.pipeline import Pipeline


def run_config(model: str, method: str, args) -> RunConfig:
    dataset = SyntheticConfig(train_size=args.limit + 1000, val_size=1000) if args.synthetic else MnistConfig(limit=args.limit)
    return RunConfig(
        model=SCHEMAS["model"][model](),
        dataset=dataset,
        method=SCHEMAS["method"][method](),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, schedule="constant"),
        finetune=FinetuneConfig(epochs=0),
        curve=CurveConfig(fractions=[]),
        measure=MeasureConfig(slim=False, speed=False),
        threads=args.threads,
        device=Device(args.device),
        progress=False,
        histograms=False,
    )


def runner_throughput(model: str, method: str, args) -> tuple[float, float]:
    """(samples/s of the training loop alone, samples/s of whole epochs incl. eval/metrics/checkpoint)."""
    cfg = run_config(model, method, args)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(cfg, Path(tmp), {})
        results = pipe.run()
    train = results["phases"]["train"]
    return train["samples_per_second"], train["epochs"] * len(pipe.data.train) / max(train["seconds"], 1e-9)


def minimal_throughput(model_name: str, args) -> float:
    """The same training a user would write by hand: no metrics, no checkpoints, no hooks."""
    cfg = run_config(model_name, "none", args)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    torch.manual_seed(0)
    data = load_data(cfg.dataset, device)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    accel = Accel.resolve(cfg, device, model)  # the same memory format as the runner (channels_last for conv nets)
    model = accel.prepare(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    x_all, y_all = data.train.x, data.train.y
    to_input = data.train.pixels  # uint8 pixels -> float inputs, as every batch of the pipeline
    n, bs = len(y_all), args.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(n, device=device, generator=gen)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            loss = F.cross_entropy(model(accel.input(to_input(x_all.index_select(0, idx)))), y_all.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.epochs * n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    p.add_argument("--methods", nargs="+", default=sorted(METHODS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training examples per epoch")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median ratio is printed")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--synthetic", action="store_true", help="generated data instead of MNIST")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{args.epochs} epochs x {args.limit} examples, batch {args.batch_size}, median of {args.repeats}")
    for model in args.models:
        overhead, whole = [], []
        method_ratio: dict[str, list[float]] = {m: [] for m in args.methods if m != "none"}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            base = minimal_throughput(model, args)
            loop, epoch = runner_throughput(model, "none", args)
            overhead.append(base / loop)
            whole.append(base / epoch)
            for method in method_ratio:
                method_ratio[method].append(loop / runner_throughput(model, method, args)[0])
        print(f"\n{model}: time ratios (>1 = slower)")
        print(f"  runner loop / minimal loop           {statistics.median(overhead):.3f}x  (target <= 1.15)")
        print(f"  runner whole epoch / minimal loop    {statistics.median(whole):.3f}x  (adds validation, metrics, checkpoint)")
        for method, ratios in method_ratio.items():
            print(f"  method={method:<12} / method=none     {statistics.median(ratios):.3f}x  (target <= 1.3)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
