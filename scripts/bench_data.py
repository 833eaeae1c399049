"""Data-path benchmark, printed as ratios (these machines are too noisy for absolute times).

1. CIFAR: the pipeline's path (uint8 images held on the run device, cropped, flipped and
   normalised there in batches) against torchvision's (datasets.CIFAR10 + RandomCrop,
   RandomHorizontalFlip, ToTensor, Normalize + DataLoader workers), training the same
   model from the same weights for the same number of steps on fake CIFAR-10 files in
   the real on-disk format, written to a temporary folder.
2. MNIST-shaped data: uint8 pixels converted per batch against float32 inputs held as they are.

    python scripts/bench_data.py                                  # resnet32
    python scripts/bench_data.py --model lenet5 --steps 100 --workers 2 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sparsity_bench.config import SCHEMAS, Cifar10Config
from sparsity_bench.datasets import Pixels, TensorSplit, load_data
from sparsity_bench.datasets.cifar import torchvision_class, write_cifar
from sparsity_bench.models import build_model

EPOCH = 45_000  # CIFAR-10's training split at the default dataset.val_size


def endless(make_batches):
    while True:
        yield from make_batches()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_training(model, batches, steps: int, warmup: int, device: torch.device, train: bool = True) -> float:
    """Seconds for `steps` steps after `warmup` untimed ones; train=False only draws the batches."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = next(batches)
        if train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)
    return time.perf_counter() - t0


def cifar_paths(root: Path, args, device: torch.device):
    """(name -> a fresh endless batch iterator) for the two paths, equal in what they compute."""
    data = load_data(Cifar10Config(root=str(root), download=False, verify=False, val_size=0), device)
    mean, std = data.train.pixels.mean.view(-1).tolist(), data.train.pixels.std.view(-1).tolist()
    from torchvision import transforms as T

    tv = torchvision_class("cifar10", verify=False)(str(root), train=True, transform=T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std),
    ]))  # fmt: skip
    loader = DataLoader(
        tv, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip

    def on_device():
        gen = torch.Generator(device=device).manual_seed(0)
        return endless(lambda: data.train.batches(args.batch_size, gen))

    def dataloader():
        return ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in endless(lambda: loader))

    return {"in-memory, on device": on_device, "torchvision DataLoader": dataloader}


def mnist_paths(args, device: torch.device):
    n = 10_000
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    splits = {"uint8, converted per batch": TensorSplit(pixels, labels, Pixels()),
              "float32, held as inputs": TensorSplit(pixels.float().div(255.0), labels)}  # fmt: skip

    def run(split):
        return lambda: endless(lambda: split.batches(100, torch.Generator(device=device).manual_seed(0)))

    return {name: run(split) for name, split in splits.items()}


def compare(title: str, paths: dict, make_model, args, device: torch.device, per_epoch: int) -> None:
    initial = make_model().state_dict()
    seconds: dict[str, dict[str, list[float]]] = {name: {"train": [], "data": []} for name in paths}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        for name, make_batches in paths.items():
            model = make_model()
            model.load_state_dict(initial)
            seconds[name]["train"].append(timed_training(model, make_batches(), args.steps, args.warmup, device))
            seconds[name]["data"].append(timed_training(model, make_batches(), args.steps, args.warmup, device, train=False))
    print(f"\n{title}")
    print(f"  {'':28} {'samples/s':>10} {'s/epoch':>9} {'data only, samples/s':>21}")
    rate = {}
    for name, s in seconds.items():
        batch = args.batch_size if "MNIST" not in title else 100
        rate[name] = {k: args.steps * batch / statistics.median(v) for k, v in s.items()}
        print(f"  {name:<28} {rate[name]['train']:>10.0f} {per_epoch / rate[name]['train']:>9.1f} {rate[name]['data']:>21.0f}")
    (a, ra), (b, rb) = rate.items()
    print(f"  ratio {a} / {b}: throughput {ra['train'] / rb['train']:.2f}x, time per epoch {rb['train'] / ra['train']:.2f}x, "
          f"data alone {ra['data'] / rb['data']:.2f}x")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet32", help=f"one of {', '.join(SCHEMAS['model'])}")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per path")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision path")
    p.add_argument("--images", type=int, default=10_000, help="fake training images written")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are printed")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the main process (default: torch's)")
    p.add_argument("--parts", nargs="+", choices=["cifar", "mnist"], default=["cifar", "mnist"])
    args = p.parse_args()
    if "cifar" in args.parts and args.model not in SCHEMAS["model"]:
        p.error(f"--model {args.model} is not a model here; choose one of {', '.join(SCHEMAS['model'])}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{args.steps} steps (+{args.warmup} warm-up) per path, median of {args.repeats}")  # fmt: skip
    if "cifar" in args.parts:
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            n_test = 1000
            images = rng.integers(0, 256, (args.images + n_test, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, args.images + n_test)
            write_cifar(Path(tmp), "cifar10", (images[: args.images], labels[: args.images]),
                        (images[args.images :], labels[args.images :]), [f"class{i}" for i in range(10)])  # fmt: skip
            model_cfg = SCHEMAS["model"][args.model]()
            compare(
                f"CIFAR-10 ({args.images} fake images), {args.model}, batch {args.batch_size}, augmented: crop (pad 4) + flip "
                f"+ normalise; DataLoader with {args.workers} workers; s/epoch for {EPOCH} images",
                cifar_paths(Path(tmp), args, device), lambda: build_model(model_cfg, (3, 32, 32), 10).to(device), args, device, EPOCH,
            )  # fmt: skip
    if "mnist" in args.parts:
        lenet300 = SCHEMAS["model"]["lenet300"]()
        compare(
            "MNIST-shaped (10000 random images), LeNet-300-100, batch 100; s/epoch for 55000 images",
            mnist_paths(args, device), lambda: build_model(lenet300, (1, 28, 28), 10).to(device), args, device, 55_000,
        )  # fmt: skip

if __name__ == "__main__":
    main()
