"""Every paper preset in conf/experiment composes with its real dataset, and runs a
one-epoch smoke version of itself on synthetic data of the same shape."""
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sparsity_bench.cli import CONF_DIR, _register
from sparsity_bench.config import validate
from sparsity_bench.pipeline import Pipeline

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
SMOKE = ["dataset=synthetic", "dataset.train_size=300", "dataset.val_size=50", "dataset.test_size=50",
         "train.epochs=1", "finetune.epochs=1", "train.batch_size=50", "finetune.batch_size=50",
         "measure.speed=false", "histograms=false", "progress=false"]  # fmt: skip


# Tiny stand-ins of the CIFAR models keep the smoke runs to seconds on a CPU.
SMOKE_EXTRA = {
    "l0_wrn_cifar10": ["dataset.shape=[3,32,32]", "model.depth=10", "model.widen_factor=1"],
    "td_resnet32_cifar10": ["dataset.shape=[3,32,32]", "model.depth=8", "model.width=1"],
    "group_hoyer_resnet56_cifar10": ["dataset.shape=[3,32,32]", "model.depth=8"],
}


def _compose(overrides):
    _register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_the_design_card_presets_exist():
    design = {f"{m}_{n}_mnist" for m in ("l0", "l0sep", "hoyer", "group_hoyer") for n in ("lenet300", "lenet5")}
    cifar = {"l0_wrn_cifar10", "td_resnet32_cifar10", "group_hoyer_resnet56_cifar10"}
    assert design | cifar | {"td_lenet5_mnist"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_its_paper_settings(name):
    run = validate(_compose([f"+experiment={name}"]))
    real = 20 if name.startswith("best_") else 50  # best_*: our measured points, not the papers' schedules
    assert run.dataset.name != "synthetic" and run.train.epochs >= real  # a real schedule, not a smoke one


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_one_epoch(name, tmp_path):
    cfg = _compose([f"+experiment={name}", *SMOKE, *SMOKE_EXTRA.get(name, [])])
    run = validate(cfg)
    results = Pipeline(run, tmp_path, OmegaConf.to_container(cfg, resolve=True)).run()
    assert results["status"] == "finished"
    assert (tmp_path / "results.json").is_file()


def _paper_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_results", CONF_DIR.parent / "scripts" / "paper_results.py")
    paper_results = importlib.util.module_from_spec(spec)
    sys.modules["paper_results"] = paper_results  # dataclasses look their module up there
    spec.loader.exec_module(paper_results)
    return paper_results


def test_results_page_puts_our_runs_next_to_the_paper(tmp_path):
    paper_results = _paper_results()
    runs, out, record = tmp_path / "runs", tmp_path / "RESULTS.md", tmp_path / "paper_runs.json"
    cfg = _compose(["+experiment=l0_lenet300_mnist", *SMOKE])
    Pipeline(validate(cfg), runs / "l0_lenet300_mnist" / "seed0", OmegaConf.to_container(cfg, resolve=True)).run()
    paper_results.main([str(runs), "--out", str(out), "--record", str(record)])
    page = out.read_text()
    ours = [line for line in page.splitlines() if line.startswith("| LeNet-300-100 | L0, lambda 0.1/N")]
    assert len(ours) == 1 and "219-214-100 at 1.4% error" in ours[0] and "seed 0" in ours[0]
    assert "| LeNet-5 | L0-sep | 9-18-65-25 at 1.0% error | error <= 1.1%, no layer larger | not run |" in page
    assert "| 1+1 | " in ours[0]  # the epochs actually run (SMOKE: 1 + 1): a shortened run says so
    # The run directories may be gone: the record alone rebuilds the same table, and the
    # text written around the table survives a rewrite.
    out.write_text(page.replace(paper_results.START, "Notes above.\n" + paper_results.START) + "\nNotes below.\n")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    paper_results.main([str(empty), "--out", str(out), "--record", str(record)])
    again = out.read_text()
    assert again.count("| LeNet-300-100 | L0, lambda 0.1/N") == 1 and ours[0] in again
    assert "Notes above." in again and "Notes below." in again
    assert paper_results.no_layer_larger("219-200-100", "219-214-100")
    assert not paper_results.no_layer_larger("220-200-100", "219-214-100")


def test_results_record_keeps_every_schedule_and_replaces_a_repeated_run():
    merge = _paper_results().merge
    short = {"preset": "hoyer_lenet5_mnist", "seed": 0, "epochs": "40+10", "error": 1.06}
    full = dict(short, epochs="250+50", error=0.95)
    rerun = dict(short, error=1.01)
    assert merge([short], [full]) == [full, short]  # sorted by preset, seed, epochs
    assert merge([short, full], [rerun]) == [full, rerun]
    other_lambdas = dict(full, command="python -m sparsity_bench +experiment=hoyer_lenet5_mnist method.lam=1e-3")
    assert merge([full], [other_lambdas]) == [full, other_lambdas]  # an override makes another run


def test_a_row_lists_the_project_own_recipe_under_the_paper_one_and_checks_it_too():
    paper_results = _paper_results()
    base = {"seed": 0, "epochs": "60+20", "minutes": 25, "nonzero": 0.87, "command": "c", "machine": "m"}
    paper = dict(base, preset="group_hoyer_lenet5_mnist", error=1.07, architecture="6-15-226-16", flops=10.2)
    ours = dict(base, preset="best_group_hoyer_lenet5_mnist", error=0.85, architecture="5-13-164-20", flops=7.9)
    lines = [line for line in paper_results.table([ours, paper]).splitlines() if line.startswith("| LeNet-5 | Group-HS |")]
    assert len(lines) == 2 and "6-15-226-16" in lines[0] and "`best_group_hoyer_lenet5_mnist`" in lines[1]
    assert "| no |" in lines[0] and "| yes |" in lines[1]  # >= 99.0% with <= 10% of dense FLOPs
