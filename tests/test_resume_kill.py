"""Runs killed with SIGKILL resume, through the real command line, to exactly the uninterrupted result.

One run directory goes through: `python -m sparsity_bench` killed from outside in the
train phase; a resume that is killed in the finetune phase while it writes a
checkpoint (half a .tmp file left behind); a resume to the end; and a re-run that
only says the run is finished. Its results, final weights and TensorBoard scalars
must equal those of the same run done without interruption. (The last two go
through the command line's main() in this process: the same code, without paying
for another interpreter start.)
"""
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparsity_bench.cli import CONF_DIR, _job_config, _register, main
from sparsity_bench.config import validate
from sparsity_bench.pipeline import Pipeline

from conftest import subprocess_env, trained_outcome

OVERRIDES = [
    "dataset=synthetic", "dataset.train_size=500", "dataset.val_size=100", "dataset.test_size=200", "dataset.noise=3",
    "model=lenet300", "method=l1", "method.lam=1e-4", "train.batch_size=25", "finetune.batch_size=25",
    "train.epochs=4", "finetune.epochs=2", "curve.fractions=[0.5,0.9]", "histograms=false",
    "measure.slim=false", "measure.speed=false", "threads=1", "progress=false",
]  # fmt: skip

# python -m sparsity_bench, killed by SIGKILL right after torch.save wrote half of the
# checkpoint of finetune epoch 2 (a crash in the middle of a checkpoint write).
KILLED_WHILE_SAVING = """
import os, signal, sys, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and obj.get("phase") == "finetune" and obj.get("epoch") == 2:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
from sparsity_bench.cli import main
main(sys.argv[1:])
"""


def _reference(run_dir):
    """The same run, uninterrupted, in this process."""
    from hydra import compose, initialize_config_dir

    _register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=OVERRIDES, return_hydra_config=True)
    return Pipeline(validate(cfg), run_dir, _job_config(cfg)).run()


def _scalars(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _main(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sparsity_bench"])
    main(argv)


def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.pt"
    cli = [sys.executable, "-m", "sparsity_bench", *OVERRIDES, f"hydra.run.dir={run_dir}"]

    # 1. SIGKILL from outside as soon as the first checkpoint (train epoch 1) is there
    proc = subprocess.Popen(cli, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    state = torch.load(ckpt, weights_only=False)
    assert state["phase"] == "train" and state["epoch"] < 4  # killed mid-train

    # 2. resume; killed in the finetune phase while writing the epoch-2 checkpoint
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SAVING, *OVERRIDES, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "Resuming from" in proc.stdout + proc.stderr
    state = torch.load(ckpt, weights_only=False)  # the previous checkpoint is intact
    assert (state["phase"], state["epoch"]) == ("finetune", 1)
    partial = ckpt.with_suffix(".pt.tmp")
    assert partial.is_file()
    with pytest.raises(Exception):
        torch.load(partial, weights_only=False)

    # 3. resume to the end
    monkeypatch.chdir(tmp_path)
    _main(cli[3:], monkeypatch)
    assert "(finetune phase, epoch 1)" in (run_dir / "run.log").read_text()
    resumed = json.loads((run_dir / "results.json").read_text())

    reference = _reference(tmp_path / "whole")
    assert resumed["status"] == "finished"
    assert trained_outcome(resumed["final"]) == trained_outcome(reference["final"])
    assert resumed["prune_curve"] == reference["prune_curve"]
    for phase in ("train", "prune", "finetune"):
        for key in ("test_acc", "val_acc"):
            assert resumed["phases"][phase][key] == reference["phases"][phase][key], (phase, key)
    weights = torch.load(ckpt, weights_only=False)["model"]
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], whole[k]) for k in whole)

    # TensorBoard: what was written after each checkpoint was dropped on resume, so every
    # tag holds the same values at the same steps as in the uninterrupted run
    got, want = _scalars(run_dir / "tb"), _scalars(tmp_path / "whole" / "tb")
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert all(_same(a, b) for (_, a), (_, b) in zip(got[tag], points)), tag
    assert [s for s, _ in got["val/acc"]] == [1, 2, 3, 4, 5, 6]  # once per epoch of both phases
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4] and [s for s, _ in got["finetune/loss"]] == [5, 6]

    # 4. once finished, the same command says so in one line and trains nothing
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "results.json", ckpt, run_dir / ".hydra" / "overrides.yaml")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        _main(cli[3:], monkeypatch)
    assert stop.value.code == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 1 and "holds a finished run" in lines[0] and "nothing to train" in lines[0], out.out
    assert out.err == ""
    assert {p: p.stat().st_mtime_ns for p in before} == before
