"""Data-parallel runs under torchrun (gloo on the CPU): one run directory, and the result of one process."""
import json
import subprocess
import sys

import pytest
import torch

from sparsity_bench import cli
from sparsity_bench.config import validate
from sparsity_bench.distributed import Dist
from sparsity_bench.pipeline import Pipeline

from conftest import subprocess_env

BASE = [
    "dataset=synthetic", "dataset.train_size=500", "dataset.val_size=100", "dataset.test_size=300", "dataset.noise=2",
    "model=lenet300", "train.lr=3e-3", "train.batch_size=50", "finetune.batch_size=50", "train.epochs=2",
    "finetune.epochs=1", "curve.fractions=[]", "histograms=false", "measure.slim=false", "measure.speed=false",
    "threads=1", "progress=false", "device=cpu",
]  # fmt: skip


def _torchrun(args, cwd):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sparsity_bench", *args]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def _composed(overrides):
    from hydra import compose, initialize_config_dir

    cli._register()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return validate(cfg), cli._job_config(cfg)


def _one_process(overrides, run_dir):
    run, config = _composed(overrides)
    return Pipeline(run, run_dir, config).run()


def _assert_same_run(two_dir, one_dir):
    """Same batches, same random draws: one process and two agree up to float rounding."""
    two = json.loads((two_dir / "results.json").read_text())
    one = json.loads((one_dir / "results.json").read_text())
    assert two["status"] == "finished"
    for phase in ("train", "prune", "finetune"):
        assert two["phases"][phase]["test_acc"] == pytest.approx(one["phases"][phase]["test_acc"], abs=0.02), phase
    assert two["final"]["sparsity"] == pytest.approx(one["final"]["sparsity"], abs=0.01)
    a = torch.load(two_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(one_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3
    return two


def test_batch_slices_are_disjoint_and_make_the_batch():
    x, y = torch.arange(11.0).view(11, 1), torch.arange(11)
    parts = [Dist(rank=r, world=3).shard(x, y) for r in range(3)]
    assert [p[1].tolist() for p in parts] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]
    assert sum(share for _, _, share in parts) == pytest.approx(1.0)
    assert [share for _, _, share in parts] == [3 / 11, 4 / 11, 4 / 11]
    # fewer examples than ranks: a rank without examples still runs, with weight 0
    parts = [Dist(rank=r, world=2).shard(x[:1], y[:1]) for r in range(2)]
    assert [(p[1].tolist(), p[2]) for p in parts] == [([0], 0.0), ([0], 1.0)]
    assert Dist().shard(x, y)[2] == 1.0 and Dist().shard(x, y)[1] is y


def test_each_rank_needs_a_gpu_of_its_own_for_cuda():
    gpus = torch.cuda.device_count()
    without_gpu = Dist(rank=gpus, world=gpus + 2, local_rank=gpus)  # local ranks 0..gpus-1 have one
    assert "more processes per node than there are GPUs" in without_gpu.device_problem("cuda")
    assert without_gpu.device_problem("cpu") is None
    assert Dist().device_problem("cuda") is None  # one process: the usual device checks apply


class _Rank:
    """Stands in for a rank of a torchrun group: rank 0 resolved the run directory below."""

    def __init__(self, rank, main_dir):
        self.rank, self.is_main, self.main_dir = rank, rank == 0, main_dir

    def first_problem(self, problem):
        return problem

    def device_problem(self, device):
        return None

    def share_from_main(self, value):
        return self.main_dir


def test_every_rank_takes_rank_0s_run_directory_and_only_rank_0_records(tmp_path):
    main_dir = str(tmp_path / "it's rank 0's")
    argv = cli._checked_argv(["method=l1", "hydra.run.dir=elsewhere"], _Rank(1, main_dir))
    assert argv[0] == "method=l1" and "hydra.run.dir=elsewhere" not in argv
    assert "hydra.output_subdir=null" in argv and "hydra/job_logging=disabled" in argv
    (pinned,) = [a for a in argv if a.startswith("hydra.run.dir=")]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_overrides([pinned])[0].value() == main_dir
    assert "hydra.output_subdir=null" not in cli._checked_argv(["method=l1"], _Rank(0, main_dir))


def test_a_sweep_under_torchrun_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        cli._checked_argv(["-m", "method=l1,l2"], _Rank(0, "x"))
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: A sweep cannot run under torchrun")


def test_two_processes_train_one_run_like_one_process(tmp_path):
    """Targeted Dropout: weights parametrized, a random mask per forward (the same on both ranks)."""
    args = [*BASE, "method=td"]
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()  # one run directory for both ranks
    assert len(list(run_dir.glob("**/results.json"))) == 1
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0's
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "run.log").is_file()
    assert proc.stdout.count("run directory") == 1  # one summary

    _one_process(args, tmp_path / "one")
    two = _assert_same_run(run_dir, tmp_path / "one")
    assert two["phases"]["train"]["test_acc"] > 0.4  # it learned (10 classes)


def test_two_processes_resume_a_checkpoint_of_one(tmp_path, monkeypatch):
    """L0: gates through parametrize, a penalty scaled by 1/N; one process stops after train epoch 1."""
    args = [*BASE, "method=l0", "method.lam=0.001"]
    run, config = _composed(args)
    real_save = Pipeline._save

    def save_then_die(self, *a, **kw):
        real_save(self, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(run, tmp_path / "run", config).run()
    monkeypatch.undo()

    proc = _torchrun([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from" in (tmp_path / "run" / "run.log").read_text()
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))) == 2  # one process, then rank 0

    _one_process(args, tmp_path / "one")
    _assert_same_run(tmp_path / "run", tmp_path / "one")
