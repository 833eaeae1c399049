"""Every paper preset in conf/experiment composes with its real dataset, and runs a
one-epoch smoke version of itself on synthetic data of the same shape."""
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


def _compose(overrides):
    _register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_the_design_card_presets_exist():
    design = {f"{m}_{n}_mnist" for m in ("l0", "l0sep", "hoyer", "group_hoyer") for n in ("lenet300", "lenet5")}
    assert design | {"td_lenet5_mnist"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_its_paper_settings(name):
    run = validate(_compose([f"+experiment={name}"]))
    assert run.dataset.name != "synthetic" and run.train.epochs >= 50  # a real schedule, not a smoke one


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_one_epoch(name, tmp_path):
    cfg = _compose([f"+experiment={name}", *SMOKE])
    run = validate(cfg)
    results = Pipeline(run, tmp_path, OmegaConf.to_container(cfg, resolve=True)).run()
    assert results["status"] == "finished"
    assert (tmp_path / "results.json").is_file()
