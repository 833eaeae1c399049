"""Does removing units pay off in time? A structurally pruned LeNet-5 on MNIST, slimmed and timed.

Trains LeNet-5 briefly, keeps the units of an L0-style architecture by filter
norm (conv1 filters, conv2 filters, fc1 output neurons; fc1 reads the 16
features of each kept conv2 channel: a slimmed LeNet-5 removes inputs of fc1 in
blocks of 16), finetunes with the masks held, then reports the structural FLOPs
ratio, the slimmed model's agreement with the masked one, and the measured
speedup, against the target speedup >= 0.6 x the FLOPs ratio.

    python scripts/slim_speed.py --keep 20 25 462 --limit 10000 --epochs 1 --threads 1
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from sparsity_bench.config import MnistConfig
from sparsity_bench.datasets import load_data
from sparsity_bench.metrics import measure
from sparsity_bench.metrics.flops import dense_flops
from sparsity_bench.metrics.slim import max_abs_diff, slim
from sparsity_bench.metrics.speed import csr_linear_speed, model_speed
from sparsity_bench.models import LeNet5
from sparsity_bench.pipeline import evaluate


def train(model, data, epochs: int, masks: dict | None = None, lr: float = 1e-3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for x, y in data.train.batches(100, gen):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for p, m in masks.items():
                        p.mul_(m)


def structured_masks(model: LeNet5, conv1: int, conv2: int, fc1: int) -> dict:
    """Keep the largest-norm units; dropped units lose weights and bias, and their readers' inputs."""
    c1, c2, f1, f2 = model.features[0], model.features[3], model.classifier[1], model.classifier[3]
    top = lambda w, k: w.flatten(1).norm(dim=1).topk(k).indices  # noqa: E731
    k1, k2, kf = top(c1.weight, conv1), top(c2.weight, conv2), top(f1.weight, fc1)
    out = lambda p, idx: torch.zeros(p.shape[0], dtype=torch.bool).index_fill_(0, idx, True)  # noqa: E731
    m1, m2, mf = out(c1.weight, k1), out(c2.weight, k2), out(f1.weight, kf)
    masks = {
        c1.weight: m1[:, None, None, None].expand_as(c1.weight).float(), c1.bias: m1.float(),
        c2.weight: (m2[:, None, None, None] & m1[None, :, None, None]).expand_as(c2.weight).float(), c2.bias: m2.float(),
        f1.weight: (mf[:, None] & m2.repeat_interleave(16)[None, :]).float(), f1.bias: mf.float(),
        f2.weight: mf[None, :].expand_as(f2.weight).float(),
    }  # fmt: skip
    with torch.no_grad():
        for p, m in masks.items():
            p.mul_(m)
    return masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=int, nargs=3, default=[20, 25, 462], metavar=("CONV1", "CONV2", "FC1"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = load_data(MnistConfig(limit=args.limit), torch.device("cpu"))
    model = LeNet5(data.input_shape, data.num_classes)
    train(model, data, args.epochs)
    dense_acc = evaluate(model, data.test, 1000)
    masks = structured_masks(model, *args.keep)
    pruned_acc = evaluate(model, data.test, 1000)
    train(model, data, args.finetune_epochs, masks)
    acc = evaluate(model, data.test, 1000)
    model.eval()

    m = measure(model, data.input_shape)
    x = data.test.examples(256)
    result = slim(model, x)
    speed = model_speed(model, result.model, x, torch.device("cpu"), (1, 256), args.repeats, 3)
    csr = csr_linear_speed(model, x, torch.device("cpu"), 256, args.repeats, 3)
    flops_ratio = m["flops_dense"] / m["flops_structural"]
    speedup = speed["batch_256"]["speedup"]
    report = {
        "architecture": m["architecture"],
        "test_acc": {"dense": dense_acc, "pruned": pruned_acc, "finetuned": acc},
        "flops_dense": m["flops_dense"], "flops_structural": m["flops_structural"],
        "flops_slim": dense_flops(result.model, data.input_shape), "folded_units": result.folded,
        "structural_flops_ratio": flops_ratio,
        "slim_max_abs_diff": max_abs_diff(model, result.model, data.test.examples(1000)),
        "speed": speed, "csr_linear_speedup": None if csr is None else csr["speedup"],
        "speedup_measured": speedup, "target": 0.6 * flops_ratio, "meets_target": speedup >= 0.6 * flops_ratio,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
