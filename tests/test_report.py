"""Sweep reports, sweep presets and the joblib launcher."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sparsity_bench.cli import preflight
from sparsity_bench.report import collect, display_rows, group_runs, pareto_front, summarize, swept_keys

SMALL = ["dataset=synthetic", "dataset.train_size=400", "dataset.val_size=100", "dataset.test_size=100",
         "train.epochs=1", "finetune.epochs=1", "histograms=false"]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(module, args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two real jobs from a sweep preset run by the joblib launcher (each job in its own
    process), plus a failed job, an unfinished one and an unreadable results.json."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = _run("sparsity_bench", ["+sweep=lam_grid", "method=l1", "method.lam=1e-5,1e-3", "seed=0", *SMALL,
                                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "multirun").iterdir()  # every job found the same sweep directory
    failed = sweep_dir / "2_lenet300_hoyer_lam10.0_seed0"
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "The loss became NaN/Inf.", "config": {}}))
    (sweep_dir / "3_lenet300_hoyer_lam1.0_seed0" / ".hydra").mkdir(parents=True)  # started, never finished
    (sweep_dir / "4_broken").mkdir()
    (sweep_dir / "4_broken" / "results.json").write_text('{"status": "fini')
    return sweep_dir


def test_joblib_sweep_of_a_preset_runs_every_job(sweep):
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "results.json").exists() and p.name[0] in "01")
    assert jobs == ["0_lenet300_l1_lam1e-05_seed0", "1_lenet300_l1_lam0.001_seed0"]
    for job in jobs:
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["status"] == "finished"


def test_report_writes_table_csv_plots_and_lists_skipped_jobs(sweep):
    import matplotlib.image

    proc = _run("sparsity_bench.report", [str(sweep)], sweep)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "test acc %" in out and "l1" in out and "1e-05" in out and "0.001" in out
    assert "skipped 3 job(s)" in out
    assert "2_lenet300_hoyer_lam10.0_seed0: failed: The loss became NaN/Inf." in out
    assert "3_lenet300_hoyer_lam1.0_seed0: unfinished" in out
    assert "4_broken: unreadable results.json" in out

    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], float(r["lam"]), r["n_seeds"]) for r in rows] == [("l1", 1e-5, "1"), ("l1", 1e-3, "1")]
    for r in rows:
        assert 0 <= float(r["test_acc_mean"]) <= 1 and 0 <= float(r["sparsity_mean"]) < 1
        assert r["test_acc_std"] == ""  # one seed: no spread
        assert r["architecture"] == "784-300-100" and int(r["flops_dense"]) == 532400
        assert float(r["flops_effective_mean"]) <= 532400
        # timed on a busy machine, the one seed's speedup is left out as noise, and counted
        assert float(r["speedup_measured_mean"]) > 0 if r["speedup_unsteady"] == "0" else r["speedup_measured_mean"] == ""

    md = (sweep / "report.md").read_text()
    assert "| method | model | dataset | lam |" in md and "## Skipped jobs (3)" in md and "NaN/Inf" in md
    for name in ("accuracy_vs_sparsity.png", "accuracy_vs_flops.png"):
        png = sweep / name
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert matplotlib.image.imread(png).shape[0] > 300
        assert f"]({name})" in md


def test_report_groups_seeds_and_separates_other_swept_keys(tmp_path):
    def job(name, method, lam, seed, acc, epochs=1, steered=None, speedup=(None, None)):
        d = tmp_path / name
        d.mkdir()
        final = {"test_acc": acc, "sparsity": 0.5 + lam, "params_nonzero": 10, "params_total": 20, "flops_dense": 40,
                 "flops_effective": 20, "architecture": "5-4", "speedup_measured": speedup[0], "speedup_steady": speedup[1]}  # fmt: skip
        config = {"method": {"name": method, "lam": lam, "target_sparsity": None}, "model": {"name": "lenet300", "hidden": [300, 100]},
                  "dataset": {"name": "synthetic"}, "seed": seed, "train": {"epochs": epochs}, "device": "cpu" if seed else "cuda",
                  "curve": {"fractions": [0.5] if seed else []}, "measure": {"threads": seed}}  # fmt: skip
        results = {"status": "finished", "final": final, "config": config}
        if steered:
            results["method"] = {"lam_final": steered[0], "sparsity_before_cut": steered[1]}
        (d / "results.json").write_text(json.dumps(results))

    job("0_a", "l1", 0.1, 0, 0.90, steered=(0.2, 0.94), speedup=(3.0, True))
    job("1_a", "l1", 0.1, 1, 0.80, steered=(0.4, 0.96), speedup=(9.0, False))
    job("2_a", "l1", 0.1, 2, 0.85, epochs=2)
    job("3_a", "hoyer", 0.1, 0, 0.70)
    runs, skipped = collect([tmp_path])
    assert len(runs) == 4 and not skipped
    extra = swept_keys(runs)
    assert extra == ["train.epochs"]  # seed, device, the prune curve and measurements are not experiment keys
    rows = [summarize(g, extra) for g in group_runs(runs, extra)]
    assert [(r["method"], r["train.epochs"], r["n_seeds"]) for r in rows] == [("hoyer", 1, 1), ("l1", 1, 2), ("l1", 2, 1)]
    l1 = rows[1]
    assert l1["seeds"] == "0,1" and math.isclose(l1["test_acc_mean"], 0.85)
    assert math.isclose(l1["test_acc_std"], math.sqrt(0.005)) and l1["flops_reduction"] == 2.0
    # where method.target_sparsity steered lam, the report says where lam and the regularizer ended
    assert math.isclose(l1["lam_final_mean"], 0.3) and math.isclose(l1["sparsity_before_cut_mean"], 0.95)
    assert rows[0]["lam_final_mean"] is None
    # a speedup timed on a busy machine stays out of the mean, and the table says so
    assert l1["speedup_measured_mean"] == 3.0 and l1["speedup_unsteady"] == 1
    headers, cells = display_rows(rows, extra)
    assert headers[-2:] == ["lam final", "before cut %"] and cells[1][-2:] == ["0.3", "95.00"] and cells[0][-2:] == ["", ""]
    assert cells[1][headers.index("speedup")] == "3.00x (1 unsteady left out)"
    assert display_rows(rows[:1], extra)[0][-1] == "speedup"  # no steered run, no such columns


def test_report_tabulates_and_plots_prune_curves(tmp_path):
    """Runs with a prune curve (Targeted Dropout's evaluation) get a table and a plot; seeds are averaged."""
    from sparsity_bench.report import CURVE_PLOT, report

    def job(name, method, seed, curve):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        final = {"test_acc": 0.9, "sparsity": 0.5, "params_nonzero": 10, "params_total": 20, "flops_dense": 40,
                 "flops_effective": 20, "architecture": "5-4"}  # fmt: skip
        config = {"method": {"name": method, "lam": 0.0, "target_sparsity": None}, "model": {"name": "lenet5"},
                  "dataset": {"name": "mnist"}, "seed": seed}  # fmt: skip
        points = [{"fraction": f, "test_acc": a, "sparsity": f} for f, a in curve]
        (d / "results.json").write_text(json.dumps({"status": "finished", "final": final, "config": config, "prune_curve": points}))

    job("0_td", "td", 0, [(0.0, 0.70), (0.9, 0.97)])
    job("1_td", "td", 1, [(0.0, 0.72), (0.9, 0.99)])
    job("2_none", "none", 0, [(0.0, 0.99), (0.5, 0.98), (0.9, 0.50)])
    report([tmp_path / "runs"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| run | 0% pruned | 50% pruned | 90% pruned |" in md
    assert "| none | 99.00 | 98.00 | 50.00 |" in md and "| td | 71.00 |  | 98.00 |" in md
    assert (tmp_path / "out" / CURVE_PLOT).read_bytes().startswith(PNG_SIGNATURE)
    with open(tmp_path / "out" / "report.csv") as f:
        by_method = {r["method"]: r["prune_curve"] for r in csv.DictReader(f)}
    assert by_method == {"none": "0:99.00 0.5:98.00 0.9:50.00", "td": "0:71.00 0.9:98.00"}

    for d in (tmp_path / "runs").iterdir():  # without curves: neither the table nor the plot
        data = json.loads((d / "results.json").read_text())
        data.pop("prune_curve")
        (d / "results.json").write_text(json.dumps(data))
    report([tmp_path / "runs"], tmp_path / "plain")
    assert "one-shot pruning" not in (tmp_path / "plain" / "report.md").read_text()
    assert not (tmp_path / "plain" / CURVE_PLOT).exists()


@pytest.mark.parametrize(
    "points, x, y, expected",
    [
        # accuracy (y, max) against weights kept (x, min): (3, 90) is beaten by (2, 95); (4, 99) is the most accurate
        ([(1, 80), (2, 95), (3, 90), (4, 99), (5, 98)], "min", "max", [0, 1, 3]),
        # accuracy against sparsity (x, max): the sparsest and the most accurate, and what trades between them
        ([(0.5, 99), (0.9, 97), (0.8, 96), (0.99, 90)], "max", "max", [0, 1, 3]),
        ([(1, 1), (1, 1), (2, 0)], "min", "max", [0, 1]),  # equal points do not dominate each other
        ([(1, 1), (1, 2)], "min", "max", [1]),  # same x, better y
        ([(1, float("nan")), (2, 1)], "min", "max", [1]),
        ([], "min", "max", []),
    ],
)
def test_pareto_front_on_hand_made_points(points, x, y, expected):
    assert pareto_front(points, x, y) == expected


def test_report_refuses_a_bad_directory_in_one_sentence(tmp_path):
    for args in ([str(tmp_path / "nowhere")], [str(tmp_path)]):
        proc = _run("sparsity_bench.report", args, tmp_path)
        assert proc.returncode != 0
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    (tmp_path / "0_job" / ".hydra").mkdir(parents=True)
    proc = _run("sparsity_bench.report", [str(tmp_path)], tmp_path)
    assert proc.returncode == 1 and "0_job: unfinished" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: none of the 1 job(s)")


def test_sweep_presets_pass_preflight_and_unknown_ones_are_refused():
    assert preflight(["+sweep=lam_grid", "method=hoyer"]) is None
    assert preflight(["+sweep=methods_lenet300", "dataset=synthetic"]) is None
    assert preflight(["+sweep=lenet300_magnitude", "hydra/launcher=joblib"]) is None
    assert preflight(["+experiment=td_lenet5_mnist", "+sweep=td_lenet5_grid"]) is None
    problem = preflight(["+sweep=nope"])
    assert problem.startswith("Unknown sweep 'nope': choose one of") and "lam_grid" in problem
    assert preflight(["sweep=lam_grid"]) == "'sweep' is not in the default config: add it with +sweep=lam_grid."
    assert "joblib" in preflight(["hydra/launcher=nope"])


def test_sweep_callback_counts_jobs_that_failed_in_other_processes(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from sparsity_bench import cli

    monkeypatch.setattr(cli, "FAILED_JOBS", [])
    callback = cli.SweepCallback()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback.on_multirun_start(config)
    for name, status in [("0_ok", "finished"), ("1_bad", "failed")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status}))
    callback.on_multirun_end(config)
    assert cli.FAILED_JOBS == [str((tmp_path / "1_bad").resolve())]
    assert f"python -m sparsity_bench.report {tmp_path}" in capsys.readouterr().out


def test_every_sweep_the_configs_and_readme_name_exists():
    import re

    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text() for p in (root / "conf").rglob("*.yaml")] + [(root / "README.md").read_text()]
    named = {m for text in texts for m in re.findall(r"\+sweep=([a-z0-9_]+)(?![\w$<{])", text)}
    assert "td_lenet5_grid" in named
    assert not [name for name in named if not (root / "conf" / "sweep" / f"{name}.yaml").is_file()]


def test_sixteen_series_of_a_grid_sweep_are_told_apart_by_colour_and_marker():
    from sparsity_bench.report import series_color, series_marker

    styles = {(series_color(n), series_marker(n)) for n in range(16)}
    assert len(styles) == 16
