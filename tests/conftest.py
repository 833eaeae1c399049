import pytest
import torch

from sparsity_bench.config import (
    FinetuneConfig, LeNet5Config, LeNet300Config, MeasureConfig, PruneConfig, RunConfig, SyntheticConfig, TrainConfig, SCHEMAS,
)  # fmt: skip

MODELS = {"lenet300": LeNet300Config, "lenet5": LeNet5Config}


def small_run(model="lenet300", method="none", epochs=2, ft_epochs=1, **method_kw) -> RunConfig:
    """A tiny synthetic run, built as typed config objects (no Hydra)."""
    return RunConfig(
        model=MODELS[model](),
        dataset=SyntheticConfig(train_size=600, test_size=200, val_size=100),
        method=SCHEMAS["method"][method](**method_kw),
        train=TrainConfig(epochs=epochs, batch_size=25),
        finetune=FinetuneConfig(epochs=ft_epochs, batch_size=25),
        prune=PruneConfig(),
        measure=MeasureConfig(repeats=2, warmup=1, batch_sizes=[1, 64], threads=1),
        progress=False,
        histograms=False,
    )


def steering_run(method="l1", epochs=10, **method_kw) -> RunConfig:
    """small_run on noisier data (some loss is left to hold weights up), where method.target_sparsity
    is tested: no prune curve, no slim or speed measurement, one thread."""
    cfg = small_run("lenet300", method, epochs=epochs, ft_epochs=1, **method_kw)
    cfg.dataset.noise = 2.0
    cfg.curve.fractions = []
    cfg.measure.slim = cfg.measure.speed = False
    cfg.threads = 1
    return cfg


def trained_outcome(final: dict) -> dict:
    """results.json `final` without measured times (the speedup and its steadiness), which differ from run to run."""
    return {k: v for k, v in final.items() if not k.startswith("speedup_")}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


def subprocess_env() -> dict:
    """The environment for a child `python -m sparsity_bench`: it imports the same sparsity_bench as the tests."""
    import os
    from pathlib import Path

    import sparsity_bench

    src = str(Path(sparsity_bench.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


class Killed(Exception):
    """Stands for the process dying right after a checkpoint."""


def run_killed(cfg: RunConfig, run_dir, monkeypatch, stop_after: int) -> None:
    """Run cfg into run_dir and die right after checkpoint number stop_after."""
    from sparsity_bench.pipeline import Pipeline

    saves = {"n": 0}
    real_save = Pipeline._save

    def dying_save(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        saves["n"] += 1
        if saves["n"] == stop_after:
            raise Killed

    monkeypatch.setattr(Pipeline, "_save", dying_save)
    with pytest.raises(Killed):
        Pipeline(cfg, run_dir, {}).run()
    monkeypatch.setattr(Pipeline, "_save", real_save)


def run_interrupted(cfg: RunConfig, run_dir, monkeypatch, stop_after: int) -> tuple:
    """Run cfg into run_dir, die after checkpoint number stop_after, rerun to the end: (pipeline, results)."""
    from sparsity_bench.pipeline import Pipeline

    run_killed(cfg, run_dir, monkeypatch, stop_after)
    pipe = Pipeline(cfg, run_dir, {})
    return pipe, pipe.run()


@pytest.fixture
def one_thread():
    """Small convs run faster on one thread than on two that other work on the machine contends for."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
