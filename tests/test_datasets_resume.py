"""Augmented data, in memory and streamed, resumes to exactly the uninterrupted run."""
import numpy as np
import pytest
import torch

from sparsity_bench.config import (
    Cifar10Config, CurveConfig, FinetuneConfig, ImageNetConfig, LeNet300Config, MeasureConfig, NoneConfig, RunConfig, TrainConfig,
)  # fmt: skip
from sparsity_bench.datasets.cifar import write_cifar
from sparsity_bench.pipeline import Pipeline

from test_datasets_imagenet import _write as write_imagenet


class Killed(Exception):
    pass


def _dataset(kind, root):
    if kind == "cifar10":
        rng = np.random.default_rng(0)
        make = lambda n: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
        write_cifar(root, "cifar10", make(60), make(20), [str(i) for i in range(10)])
        return Cifar10Config(root=str(root), download=False, verify=False, val_size=20)
    write_imagenet(root)
    return ImageNetConfig(root=str(root), val_size=3, crop_size=16, resize_size=20, workers=0)


@pytest.mark.parametrize("kind", ["cifar10", "imagenet"])
def test_augmented_run_resumes_exactly(tmp_path, monkeypatch, kind):
    cfg = RunConfig(
        model=LeNet300Config(hidden=[32]),
        dataset=_dataset(kind, tmp_path / "data"),
        method=NoneConfig(),
        train=TrainConfig(epochs=2, batch_size=8),
        finetune=FinetuneConfig(epochs=1, batch_size=8),
        curve=CurveConfig(fractions=[]),
        measure=MeasureConfig(slim=False, speed=False),
        threads=1,
        progress=False,
        histograms=False,
    )
    whole = Pipeline(cfg, tmp_path / "whole", {})
    reference = whole.run()
    real_save = Pipeline._save

    def dying_save(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise Killed  # right after the first epoch's checkpoint

    monkeypatch.setattr(Pipeline, "_save", dying_save)
    with pytest.raises(Killed):
        Pipeline(cfg, tmp_path / "cut", {}).run()
    monkeypatch.setattr(Pipeline, "_save", real_save)
    resumed = Pipeline(cfg, tmp_path / "cut", {})
    phases = resumed.run()["phases"]
    for phase in ("train", "prune", "finetune"):
        assert {k: phases[phase][k] for k in ("test_acc", "val_acc")} == {k: reference["phases"][phase][k] for k in ("test_acc", "val_acc")}
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, whole.model.state_dict()[k]), k
