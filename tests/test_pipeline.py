import json

import pytest
import torch

from sparsity_bench.config import PruneRule
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import _param
from sparsity_bench.run_log import summary_table

from conftest import small_run

FINAL_KEYS = {
    "test_acc", "params_total", "params_nonzero", "sparsity", "flops_dense", "flops_effective",
    "architecture", "slim_max_abs_diff", "speedup_measured",
}  # fmt: skip


def _run(tmp_path, cfg):
    pipe = Pipeline(cfg, tmp_path, {"method": {"name": cfg.method.name}})
    return pipe, pipe.run()


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
@pytest.mark.parametrize("method", ["none", "l1", "l2", "magnitude"])
def test_end_to_end_on_synthetic(tmp_path, model, method):
    kw = {"lam": 1e-4} if method in ("l1", "l2") else {"target_sparsity": 0.8} if method == "magnitude" else {}
    cfg = small_run(model, method, **kw)
    pipe, results = _run(tmp_path, cfg)

    assert FINAL_KEYS <= set(results["final"])
    assert set(results["phases"]) == {"train", "prune", "finetune"}
    assert results["phases"]["train"]["samples_per_second"] > 0
    assert results["final"]["test_acc"] > 0.5  # it learned (10 classes: chance is 0.1)
    assert json.loads((tmp_path / "results.json").read_text())["final"]["architecture"] == results["final"]["architecture"]
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert any((tmp_path / "tb").iterdir())
    assert results["final"]["slim_max_abs_diff"] < 1e-4 and (tmp_path / "slim.pt").is_file()
    assert results["final"]["speedup_measured"] > 0

    # pruned weights stayed exactly zero through finetuning
    for key, mask in pipe.masks.items():
        assert torch.all(_param(pipe.model, key)[~mask] == 0)
    if method == "magnitude":
        assert results["final"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    if method == "none":
        assert results["final"]["sparsity"] == 0.0


def test_a_run_flushes_subnormal_floats(tmp_path):
    """Penalties push weights into the subnormal range, where CPU arithmetic crawls: a run flushes them."""
    tiny = torch.finfo(torch.float32).tiny
    torch.set_flush_denormal(False)
    try:
        assert (torch.tensor([tiny]) / 4).item() > 0  # subnormal, kept
        Pipeline(small_run("lenet300", "none"), tmp_path, {})
        assert (torch.tensor([tiny]) / 4).item() == 0.0
    finally:
        torch.set_flush_denormal(True)


def test_finetune_moves_kept_weights_but_not_pruned_ones(tmp_path):
    cfg = small_run("lenet300", "magnitude", epochs=1, ft_epochs=2, target_sparsity=0.8)
    cfg.finetune.keep_best = False
    pipe = Pipeline(cfg, tmp_path, {})
    pipe.run()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["finished"]
    pruned = torch.cat([(~m).flatten() for m in pipe.masks.values()]).float().mean()
    assert pruned == pytest.approx(0.8, abs=1e-3)
    w = pipe.model.net[1].weight
    mask = pipe.masks["net.1.weight"]
    assert torch.all(w[~mask] == 0) and torch.all(w[mask] != 0)


def test_zero_epochs_evaluates_without_training(tmp_path):
    cfg = small_run("lenet300", "none", epochs=0, ft_epochs=0)
    _, results = _run(tmp_path, cfg)
    assert results["phases"]["train"]["epochs"] == 0
    assert results["final"]["test_acc"] < 0.5  # an untrained net is near chance


def test_std_rule_after_l1_training_prunes(tmp_path):
    cfg = small_run("lenet300", "l1", epochs=2, ft_epochs=1, lam=1e-3)
    cfg.prune.rule = PruneRule.std
    _, results = _run(tmp_path, cfg)
    assert results["final"]["sparsity"] > 0.1


def test_finished_run_is_not_trained_again(tmp_path):
    cfg = small_run("lenet300", "none", epochs=1, ft_epochs=0)
    _, first = _run(tmp_path, cfg)
    pipe = Pipeline(cfg, tmp_path, {})
    second = pipe.run()
    assert second == first


def test_ema_weights_are_the_ones_evaluated_and_kept(tmp_path):
    """With decay 0.999 over ~50 steps the EMA sits near the initial weights."""
    def trained_distance(ema, where):
        cfg = small_run("lenet300", "none", epochs=2, ft_epochs=0)
        cfg.train.ema = ema
        pipe = Pipeline(cfg, where, {})
        init = pipe.model.net[1].weight.detach().clone()
        pipe.run()
        return (pipe.model.net[1].weight - init).norm().item()

    plain = trained_distance(0.0, tmp_path / "plain")
    averaged = trained_distance(0.999, tmp_path / "ema")
    # the EMA has absorbed ~1 - 0.999**48 ~ 5% of the path, and tracked it (not zero)
    assert 0 < averaged < 0.2 * plain


def test_without_a_validation_split_every_example_trains_and_the_last_epoch_is_kept(tmp_path, caplog):
    """dataset.val_size=0, the papers' protocol (all 60,000 MNIST images train): no best-epoch choice."""
    cfg = small_run("lenet300", "magnitude", epochs=1, ft_epochs=2, target_sparsity=0.8)
    cfg.dataset.val_size = 0
    cfg.finetune.keep_best = True  # nothing to choose by: ignored
    with caplog.at_level("INFO", logger="sparsity_bench"):
        pipe, results = _run(tmp_path, cfg)
    assert len(pipe.data.train) == cfg.dataset.train_size
    assert all(phase["val_acc"] is None for phase in results["phases"].values())
    assert "keeping epoch" not in caplog.text
    assert "val n/a" in caplog.text
    finetune_row = summary_table(results, tmp_path).splitlines()[4]
    assert finetune_row.startswith("finetune") and finetune_row.split()[2] == "n/a"
