"""The command line as a user meets it: composition, refusals, run directories, sweeps."""
import json
import subprocess
import sys

import pytest

from sparsity_bench.cli import preflight

SMALL = ["dataset=synthetic", "dataset.train_size=400", "dataset.val_size=100", "dataset.test_size=100",
         "train.epochs=1", "finetune.epochs=1", "histograms=false",
         "measure.repeats=2", "measure.warmup=1", "measure.batch_sizes=[1,64]", "measure.threads=1"]  # fmt: skip


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "sparsity_bench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["method=foo"], "Unknown method 'foo': choose one of"),
        (["model=resnet"], "Unknown model 'resnet': choose one of alexnet, lenet300, lenet5, resnet32, wrn"),
        (["method.foo=1"], "Unknown config key 'method.foo'"),
        (["+method.foo=1"], "Unknown config key 'method.foo'"),
        (["+foo=1"], "Unknown config key 'foo'"),
        (["train.epochs=abc"], "Invalid value for 'train.epochs'"),
        (["device=gpu"], "expected one of [auto, cpu, cuda]"),
        (["train.batch_size=0"], "train.batch_size must be a positive integer"),
        (["method=l1", "method.lam=-1"], "method.lam must be >= 0"),
        (["-m", "method=l1,nope"], "Unknown method 'nope'"),
        (["-m", "method=l1", "method.lam=1e-4,-2"], "method.lam must be >= 0"),
        (["train.epochs=-3"], "train.epochs must be >= 0"),
        (["prune.scope=everywhere"], "prune.scope must be layer or global"),
    ],
)
def test_bad_config_is_refused_in_one_sentence(args, expected):
    problem = preflight(args)
    assert problem is not None and expected in problem
    assert "\n" not in problem


def test_good_configs_pass_preflight():
    assert preflight(["model=lenet5", "method=l1", "method.lam=1e-4"]) is None
    assert preflight(["prune.rule=sparsity", "prune.scope=global"]) is None
    assert preflight(["prune.rule=sparsity", "prune.scope=layer"]) is None
    assert preflight(["-m", "method=l1,l2", "method.lam=1e-5,1e-4"]) is None


def test_refusal_exits_nonzero_without_traceback(tmp_path):
    proc = _cli(["method=nope"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: Unknown method 'nope'")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_run_from_any_directory_writes_the_contracted_run_directory(tmp_path):
    proc = _cli([*SMALL, "model=lenet5", "method=l1", "method.lam=1e-4"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished"
    assert results["final"]["architecture"].count("-") == 3
    assert results["config"]["method"]["lam"] == 1e-4
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "run directory" in proc.stdout and "architecture" in proc.stdout
    assert "measured speedup" in proc.stdout and (run_dir / "slim.pt").is_file()


def test_multirun_gives_each_job_its_own_directory_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = _cli(["-m", *SMALL, "method=l1,l2", "method.lam=1e-5,1e-4"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 4
    names = {p.name for p in jobs}
    assert any("l1_lam1e-05" in n for n in names) and any("l2_lam0.0001" in n for n in names)
    for job in jobs:
        (events_dir,) = [job / "tb"]
        assert [p.name for p in events_dir.iterdir() if p.is_dir()] == []  # no stray sub-runs
        acc = EventAccumulator(str(events_dir))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert {"train/loss", "val/acc", "test/acc", "sparsity/total", "final/test_acc"} <= set(tags)


def test_two_runs_started_together_never_share_a_directory(tmp_path):
    args = [sys.executable, "-m", "sparsity_bench", *SMALL, "train.epochs=0", "finetune.epochs=0"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)


def test_diverging_run_stops_with_one_sentence_and_records_it(tmp_path):
    proc = _cli([*SMALL, "train.epochs=2", "train.optimizer=sgd", "train.lr=1e8"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "NaN/Inf in the train phase at epoch 1" in proc.stderr and "smaller train.lr" in proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "NaN" in results["error"]
