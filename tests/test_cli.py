"""The command line as a user meets it: composition, refusals, run directories, sweeps."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sparsity_bench.cli import CONF_DIR, _job_config, _register, preflight

from conftest import subprocess_env

SMALL = ["dataset=synthetic", "dataset.train_size=400", "dataset.val_size=100", "dataset.test_size=100",
         "train.epochs=1", "finetune.epochs=1", "histograms=false",
         "measure.repeats=2", "measure.warmup=1", "measure.batch_sizes=[1,64]", "measure.threads=1"]  # fmt: skip


def _cli(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "sparsity_bench", *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


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
        (["optim=sgd"], "Unknown config key 'optim'"),
        (
            ["+experiment=group_hoyer_lenet300_mnist", "method=group_lasso"],
            "Unknown config key 'method.l2', set by conf/experiment/group_hoyer_lenet300_mnist.yaml: the method you chose",
        ),
        (["sweep=lam_grid"], "'sweep' is not in the default config: add it with +sweep=lam_grid"),
        (["train.lr=fast"], "Invalid value for 'train.lr'"),
        (["seed=1.5"], "Invalid value for 'seed'"),
        (["histograms=maybe"], "Invalid value for 'histograms'"),
        (["finetune.epochs=-1"], "finetune.epochs must be >= 0"),
        (["finetune.batch_size=0"], "finetune.batch_size must be a positive integer"),
        (["train.lr=0"], "train.lr must be > 0"),
        (["dataset.limit=0"], "dataset.limit must be a positive number"),
        (["method=td", "method.gamma=1.5"], "method.gamma is the targeted fraction and must lie in [0, 1]"),
        (["method=td", "method.gamma=-0.1"], "method.gamma is the targeted fraction and must lie in [0, 1]"),
        (["method=td", "method.alpha=1.01"], "method.alpha is a drop probability and must lie in [0, 1]"),
        (["method=td", "method.alpha=-1"], "method.alpha is a drop probability and must lie in [0, 1]"),
        (["method=td", "method.gamma=abc"], "Invalid value for 'method.gamma'"),
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
    procs = [subprocess.Popen(args, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)


def test_diverging_run_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = _cli([*SMALL, "train.epochs=2", "finetune.optimizer=sgd", "finetune.lr=1e8"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert proc.stderr.strip() == (
        "error: The loss became NaN/Inf in the finetune phase at epoch 1; try a smaller finetune.lr "
        f"(the last good checkpoint is {ckpt})."
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and results["error"] == proc.stderr.strip().removeprefix("error: ")
    state = torch.load(ckpt, weights_only=False)  # the last train epoch, intact and finite
    assert (state["phase"], state["epoch"]) == ("train", 2)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_refused_before_anything_runs():
    assert preflight(["device=cuda"]) == "device=cuda was asked for but no CUDA GPU is visible; use device=cpu or device=auto."


def test_an_output_directory_that_cannot_be_made_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    problem = preflight([f"hydra.run.dir={tmp_path}/file/run"])
    assert problem == f"Cannot create the output directory {tmp_path}/file/run: {tmp_path}/file is a file, not a directory."
    assert "is a file" in preflight(["-m", "method=l1,l2", f"hydra.sweep.dir={tmp_path}/file/sweep"])
    assert "is a file" in preflight([f"hydra.run.dir={tmp_path}/file"])
    assert preflight([f"hydra.run.dir={tmp_path}/new/run"]) is None
    assert not (tmp_path / "new").exists()  # the check leaves nothing behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_directory_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert "Permission denied" in preflight([f"hydra.run.dir={tmp_path}/ro/run"])


def _job(overrides):
    from hydra import compose, initialize_config_dir

    _register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _job_config(compose(config_name="config", overrides=overrides, return_hydra_config=True))


def test_a_run_directory_of_another_configuration_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"phase": "train", "epoch": 1, "config": _job(["train.lr=0.01"])}, run / "checkpoints" / "last.pt")
    assert preflight(["train.lr=0.01", "threads=1", "progress=false", f"hydra.run.dir={run}"]) is None  # resumable
    problem = preflight(["train.lr=0.02", f"hydra.run.dir={run}"])
    assert "holds a checkpoint of another configuration (train.lr is 0.02 now but was 0.01)" in problem

    (run / "results.json").write_text(json.dumps({"status": "finished", "config": _job(["seed=3"])}, default=str))
    assert "holds a finished run of another configuration (seed is 0 now but was 3)" in preflight([f"hydra.run.dir={run}"])

    (run / "results.json").unlink()
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    problem = preflight([f"hydra.run.dir={run}"])
    assert problem.startswith(f"Cannot read the checkpoint {run}/checkpoints/last.pt") and "delete it" in problem


def test_unwritable_output_through_the_command_line(tmp_path):
    (tmp_path / "file").write_text("")
    proc = _cli([*SMALL, f"hydra.run.dir={tmp_path}/file/run"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == f"error: Cannot create the output directory {tmp_path}/file/run: {tmp_path}/file is a file, not a directory."


def test_missing_and_corrupt_data_fail_each_job_in_one_sentence(tmp_path):
    """One sweep over two data roots: MNIST absent (no download), and MNIST with a truncated IDX file."""
    from sparsity_bench.datasets.idx import write_idx
    from sparsity_bench.datasets.mnist_offline import IDX_SHA256

    raw = tmp_path / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_SHA256:
        write_idx(raw / name, np.zeros((10, 28, 28) if "images" in name else (10,), np.uint8))
    image_file = raw / "train-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:-100])
    (tmp_path / "empty").mkdir()
    proc = _cli(["-m", "dataset=mnist", "dataset.download=false", f"dataset.root={tmp_path}/empty,{tmp_path}/corrupt",
                 f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert "2 job(s) failed" in proc.stderr
    errors = {json.loads(p.read_text())["error"] for p in (tmp_path / "sweep").glob("*/results.json")}
    assert errors == {
        f"MNIST is not in {tmp_path}/empty/MNIST/raw and dataset.download=false; put the four IDX files there or allow the download.",
        f"MNIST file {image_file} is corrupt ({image_file} has 7756 bytes where its header promises 7856); "
        "delete it and run again to fetch a fresh copy.",
    }
