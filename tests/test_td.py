"""Targeted Dropout: candidate selection, drop statistics, ramping, evaluation, masks, end to end."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsity_bench.cli import preflight
from sparsity_bench.config import ConfigError, PruneConfig, TDConfig
from sparsity_bench.methods import build_method
from sparsity_bench.methods.td import TD, TargetedDropout, bernoulli_mask, keep_factor, threshold16, uniform16
from sparsity_bench.metrics.sparsity import raw_weight
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import _param, kth_smallest

from conftest import small_run, trained_outcome


def _distinct(shape, seed=0):
    """A weight whose magnitudes are all distinct: a random permutation of 1..n with random signs."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    mags = torch.randperm(n, generator=g).float() + 1
    signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    return (mags * signs).view(shape) / n


def _columns(w):
    """The paper's (fan_in, n_out) view, built independently of the code under test."""
    if w.dim() == 4:  # [C_out, C_in, k, k] -> (C_in*k*k, C_out)
        return w.permute(1, 2, 3, 0).reshape(-1, w.shape[0])
    return w.t()  # Linear [out, in] -> (in, out)


def _td(variant="weight", gamma=0.5, alpha=0.5, unit_drop="unit", eval_mask=True, training=True):
    t = TargetedDropout(variant, unit_drop, eval_mask, np.random.SFC64(0))
    t.gamma, t.alpha = gamma, alpha
    t.train(training)
    return t


SHAPES = [(6, 10), (4, 3, 2, 2)]  # Linear [out, in] and Conv2d [C_out, C_in, k, k]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma", [0.3, 0.5, 0.75])
def test_weight_candidates_are_the_bottom_gamma_of_each_column(shape, gamma):
    w = _distinct(shape)
    out = _td("weight", gamma, eval_mask=True, training=False)(w)
    cols, cols_out = _columns(w), _columns(out)
    fan_in = cols.shape[0]
    k = round(gamma * fan_in)
    for j in range(cols.shape[1]):
        order = cols[:, j].abs().argsort()
        assert torch.all(cols_out[order[:k], j] == 0)
        assert torch.equal(cols_out[order[k:], j], cols[order[k:], j])


@pytest.mark.parametrize("shape", SHAPES)
def test_unit_candidates_are_the_bottom_gamma_columns_by_l2_norm(shape):
    scale = torch.arange(shape[0], 0, -1).float().view(-1, *[1] * (len(shape) - 1))
    w = _distinct(shape) * scale  # output unit j (column j of the view) scaled: distinct column norms
    cols = _columns(w)
    gamma = 0.5
    out = _columns(_td("unit", gamma, training=False)(w))
    k = round(gamma * cols.shape[1])
    order = cols.norm(dim=0).argsort()
    assert torch.all(out[:, order[:k]] == 0)
    assert torch.equal(out[:, order[k:]], cols[:, order[k:]])


def test_eval_mask_off_evaluates_the_full_weights():
    w = _distinct((8, 20))
    assert torch.equal(_td(eval_mask=False, training=False)(w), w)
    assert int((_td(eval_mask=True, training=False)(w) == 0).sum()) == 8 * 10


def test_weight_drop_rate_is_alpha_of_candidates_only_without_rescaling():
    torch.manual_seed(0)
    w = _distinct((50, 40))
    alpha, gamma = 0.3, 0.5
    cand = _td("weight", gamma, training=False)(w) == 0
    td = _td("weight", gamma, alpha)
    dropped = torch.zeros_like(w)
    for _ in range(400):
        out = td(w)
        zero = out == 0
        assert not torch.any(zero & ~cand)  # non-candidates are never dropped
        assert torch.equal(out[~zero], w[~zero])  # survivors are not rescaled
        dropped += zero
    rate = dropped[cand].sum() / (400 * cand.sum())
    assert rate == pytest.approx(alpha, abs=0.01)
    assert dropped[cand].min() > 0  # every candidate gets dropped sometimes


@pytest.mark.parametrize("unit_drop", ["unit", "weight"])
def test_unit_variant_drops_candidate_units_at_rate_alpha(unit_drop):
    torch.manual_seed(0)
    w = _distinct((40, 30))
    alpha = 0.4
    cand_units = (_td("unit", 0.5, training=False)(w) == 0).all(dim=1)  # rows = output units
    td = _td("unit", 0.5, alpha, unit_drop=unit_drop)
    rates = []
    for _ in range(300):
        zero = td(w) == 0
        assert not torch.any(zero[~cand_units])
        per_unit = zero[cand_units].float().mean(dim=1)
        if unit_drop == "unit":  # a unit is dropped whole or not at all
            assert torch.all((per_unit == 0) | (per_unit == 1))
        rates.append(zero[cand_units].float().mean())
    assert torch.stack(rates).mean() == pytest.approx(alpha, abs=0.02)


def test_dropped_weights_get_no_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(20, 6)
    parametrize.register_parametrization(lin, "weight", _td("weight", 0.5, 0.5))
    x = torch.randn(32, 20)
    w = lin.weight  # one draw, reused by the forward below through functional linear
    nn.functional.linear(x, w, lin.bias).sum().backward()
    grad = lin.parametrizations.weight.original.grad
    assert torch.all(grad[w == 0] == 0) and torch.all(grad[w != 0] != 0)


def test_bernoulli_mask_rate_and_edges():
    torch.manual_seed(0)
    for bitgen in (None, np.random.SFC64(0)):
        m = bernoulli_mask((1000, 500), 0.33, torch.device("cpu"), bitgen)
        assert m.dtype == torch.bool and m.shape == (1000, 500)
        assert m.float().mean().item() == pytest.approx(0.33, abs=0.003)
    assert not bernoulli_mask((7, 3), 0.0, torch.device("cpu")).any()
    assert bernoulli_mask((7, 3), 1.0, torch.device("cpu")).all()


def test_draws_are_reproducible():
    cpu = torch.device("cpu")
    a = uniform16((50, 40), cpu, np.random.SFC64(3))
    assert torch.equal(a, uniform16((50, 40), cpu, np.random.SFC64(3)))
    torch.manual_seed(3)
    b = uniform16((50, 40), cpu)  # no bit generator: torch's
    torch.manual_seed(3)
    assert torch.equal(b, uniform16((50, 40), cpu))
    td = TD(TDConfig(), 100)
    torch.manual_seed(5)
    td.attach(nn.Linear(3, 2))  # the method's generator is seeded from torch
    twin = TD(TDConfig(), 100)
    torch.manual_seed(5)
    twin.attach(nn.Linear(3, 2))
    draw = lambda method: uniform16((8,), torch.device("cpu"), method._bitgen)  # noqa: E731
    assert torch.equal(draw(td), draw(twin))


def test_numpy_fast_path_matches_torch(monkeypatch):
    """The CPU fast path (numpy) and the generic torch path (GPUs) select and keep the same entries."""
    import sparsity_bench.pruning as pruning

    torch.manual_seed(0)
    rows = _distinct((64, 100))
    draws = uniform16(tuple(rows.shape), torch.device("cpu"), np.random.SFC64(0))
    fast_thr = kth_smallest(rows.abs(), 37)
    fast = keep_factor(rows.abs(), fast_thr, draws, threshold16(0.4), rows.dtype)
    monkeypatch.setattr(pruning, "NUMPY_ON_CPU", False)
    slow_thr = kth_smallest(rows.abs(), 37)
    assert torch.equal(fast_thr, slow_thr)
    assert torch.equal(fast, keep_factor(rows.abs(), slow_thr, draws, threshold16(0.4), rows.dtype))
    assert torch.equal(fast_thr[:, 0], rows.abs().sort(dim=1).values[:, 36])


def test_ramp_schedule():
    td = TD(TDConfig(gamma=0.8, alpha=0.6, ramp=True), 100)
    assert td.schedule(0.0) == (0.0, 0.0)
    a, g = td.schedule(0.5)
    assert a == pytest.approx(0.3) and g == pytest.approx(0.95 * 0.8)
    a, g = td.schedule(1.0)
    assert a == pytest.approx(0.6) and g == pytest.approx(0.8)
    a, g = td.schedule(0.25)
    assert a == pytest.approx(0.15) and g == pytest.approx(0.475 * 0.8)  # linear up to 0.95 gamma at T/2
    # T is a fraction of the training phase: with T = 0.5 the points move to 0.25 and 0.5, then hold
    short = TD(TDConfig(gamma=0.8, alpha=0.6, ramp=True, ramp_fraction=0.5), 100)
    assert short.schedule(0.25) == pytest.approx((0.3, 0.76))
    assert short.schedule(0.5) == pytest.approx((0.6, 0.8)) == short.schedule(0.9)
    assert TD(TDConfig(gamma=0.8, alpha=0.6), 100).schedule(0.0) == (0.6, 0.8)  # no ramp: constant


def test_step_moves_every_layer_and_state_round_trips():
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    td = TD(TDConfig(gamma=0.8, alpha=0.6, ramp=True), 100)
    td.attach(model)
    td.step(0.5)
    params = [m.parametrizations.weight[0] for m in (model[0], model[2])]
    assert all(p.gamma == pytest.approx(0.76) and p.alpha == pytest.approx(0.3) for p in params)
    assert td.scalars(model) == pytest.approx({"alpha": 0.3, "gamma": 0.76})
    fresh = TD(TDConfig(gamma=0.8, alpha=0.6, ramp=True), 100)
    fresh.load_state_dict(td.state_dict())  # before attach, as the pipeline resumes
    model2 = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    fresh.attach(model2)
    assert model2[0].parametrizations.weight[0].gamma == pytest.approx(0.76)


def test_masks_are_the_final_candidates_and_detach_leaves_raw_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    td = TD(TDConfig(gamma=0.5, alpha=0.5, ramp=True, exclude=["2"]), 100)  # progress 0: gamma(t) = 0
    td.attach(model)
    assert parametrize.is_parametrized(model[0]) and not parametrize.is_parametrized(model[2])
    raw = raw_weight(model[0]).detach().clone()
    masks = td.masks(model, PruneConfig())
    rows = raw.flatten(1).abs()
    kept = masks["0.weight"].flatten(1)
    assert kept.sum(dim=1).tolist() == [9 - round(0.5 * 9)] * 4  # the full gamma, whatever the schedule says now
    assert all(rows[i][kept[i]].min() > rows[i][~kept[i]].max() for i in range(4))
    assert masks["2.weight"].all()  # excluded: not pruned
    td.detach(model)
    assert not parametrize.is_parametrized(model[0])
    assert torch.equal(model[0].weight, raw)
    # with target_sparsity: magnitude masks, as for every method
    td2 = TD(TDConfig(gamma=0.5, target_sparsity=0.75), 100)
    model2 = nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 3))
    td2.attach(model2)
    m2 = td2.masks(model2, PruneConfig())
    assert sum(int(m.sum()) for m in m2.values()) == round(0.25 * 104)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="method.gamma"):
        TDConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="method.alpha"):
        TDConfig(alpha=-0.1)
    with pytest.raises(ConfigError, match="method.ramp_fraction"):
        TDConfig(ramp_fraction=0)
    problem = preflight(["method=td", "method.gamma=2"])
    assert problem is not None and "method.gamma" in problem and "\n" not in problem
    assert "method.variant" in (preflight(["method=td", "method.variant=filter"]) or "")
    assert preflight(["method=td", "method.variant=unit", "method.ramp=true", "method.exclude=[net.5]"]) is None
    model = nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="method.exclude names no prunable layer of this model: fc9"):
        TD(TDConfig(exclude=["fc9"]), 100).attach(model)


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_end_to_end_on_synthetic(tmp_path, model):
    cfg = small_run(model, "td", gamma=0.5, alpha=0.5, ramp=model == "lenet5")
    pipe = Pipeline(cfg, tmp_path, {"method": {"name": "td"}})
    results = pipe.run()
    assert results["final"]["test_acc"] > 0.4  # it learned (chance is 0.1)
    assert results["final"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    for key, mask in pipe.masks.items():
        assert torch.all(_param(pipe.model, key)[~mask] == 0)  # pruned weights stayed zero through finetuning
        assert not key.endswith("original")
    assert not any(parametrize.is_parametrized(m) for m in pipe.model.modules())
    curve = json.loads((tmp_path / "results.json").read_text())["prune_curve"]
    assert [p["fraction"] for p in curve] == [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
    assert curve[0]["sparsity"] == 0 and curve[-1]["sparsity"] > 0.98
    # weight-wise pruning at 0.5 removes exactly TD's candidates at gamma = 0.5: what evaluation
    # during training removed (eval_mask) and what the prune phase removed
    phases = results["phases"]
    assert curve[2]["test_acc"] == phases["prune"]["test_acc"] == phases["train"]["test_acc"]


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    """A TD run stopped after its first epoch and resumed ends where an uninterrupted run ends."""
    cfg = small_run("lenet300", "td", epochs=2, ft_epochs=0, gamma=0.5, alpha=0.5, ramp=True)
    whole = Pipeline(cfg, tmp_path / "whole", {}).run()

    class Stop(Exception):
        pass

    save = Pipeline._save

    def save_then_stop(self, phase, epoch, *args):
        save(self, phase, epoch, *args)
        if phase == "train" and epoch == 1:
            raise Stop

    monkeypatch.setattr(Pipeline, "_save", save_then_stop)
    with pytest.raises(Stop):
        Pipeline(cfg, tmp_path / "cut", {}).run()
    monkeypatch.setattr(Pipeline, "_save", save)
    resumed = Pipeline(cfg, tmp_path / "cut", {}).run()
    assert resumed["prune_curve"] == whole["prune_curve"]
    assert trained_outcome(resumed["final"]) == trained_outcome(whole["final"])


def test_a_gamma_that_targets_whole_columns_is_named(caplog):
    """LeNet-5's first conv has 25 weights per filter: gamma 0.99 targets all of them."""
    from sparsity_bench.models.lenet import LeNet5

    model = LeNet5()
    with caplog.at_level("WARNING", logger="sparsity_bench"):
        TD(TDConfig(gamma=0.99, alpha=0.99), 100, (1, 28, 28)).attach(model)
    assert "features.0" in caplog.text and "method.exclude" in caplog.text and "features.3" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sparsity_bench"):
        TD(TDConfig(gamma=0.99, alpha=0.99, exclude=["features.0"]), 100, (1, 28, 28)).attach(LeNet5())
        TD(TDConfig(gamma=0.9, alpha=0.9), 100, (1, 28, 28)).attach(LeNet5())
    assert "targets every weight" not in caplog.text
