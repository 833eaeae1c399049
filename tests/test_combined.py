"""method.plus: a weight penalty on top of another method (L0 gates with Hoyer-Square, ...)."""
import pytest
import torch
from torch import nn

from sparsity_bench.config import ConfigError, HoyerConfig, L0Config, MagnitudeConfig, PruneConfig, TDConfig
from sparsity_bench.methods import build_method
from sparsity_bench.methods.combined import PlusPenalty
from sparsity_bench.metrics.sparsity import raw_weight
from sparsity_bench.pipeline import Pipeline

from conftest import small_run, steering_run


def _lenet_like() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_penalty_is_the_base_penalty_plus_hoyer_square_of_the_gated_parameters():
    torch.manual_seed(0)
    model = _lenet_like()
    method = build_method(L0Config(lam=0.1, plus="hoyer", plus_lam=0.01), n_train=1000, input_shape=(1, 4, 4))
    assert isinstance(method, PlusPenalty)
    method.attach(model)
    thetas = [raw_weight(model[1]), raw_weight(model[3])]
    assert all(isinstance(t, nn.Parameter) for t in thetas)  # the stored weights, not their gated view
    # by hand: lam_code / N * sum over gates of P(open) * |group|, plus 0.01 * sum (sum |w|)^2 / sum w^2
    l0_part = method.inner.penalty(model)
    hs = sum(t.abs().sum() ** 2 / t.pow(2).sum() for t in thetas)
    total = method.penalty(model)
    assert torch.allclose(total, l0_part + 0.01 * hs, rtol=1e-5)
    total.backward()
    # the penalty reaches the weights under the gates and, through L0's term, the gates themselves
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in thetas)
    assert method.inner.layers[0].log_alpha.grad.abs().sum() > 0


def test_a_weight_goes_when_its_gate_closes_or_the_prune_rule_takes_it():
    torch.manual_seed(0)
    model = _lenet_like()
    method = build_method(L0Config(plus="hoyer", plus_lam=1e-3), n_train=1000, input_shape=(1, 4, 4))
    method.attach(model)
    with torch.no_grad():
        first = method.inner.layers[0]
        first.log_alpha.fill_(3.0)
        first.log_alpha[2] = -6.0  # input 2 of the first Linear: gate closed
        raw = raw_weight(model[1])
        raw.fill_(1.0)
        raw[5, 7] = 1e-4  # open gate, but far under 0.25 std of the layer
    masks = method.masks(model, PruneConfig(rule="std", threshold=0.25))
    kept = masks["1.weight"]
    assert not kept[:, 2].any()  # the closed gate's column
    assert not kept[5, 7]  # the penalty's work, removed by the prune rule
    assert int(kept.sum()) == 8 * 16 - 8 - 1


def test_a_run_with_l0_gates_and_hoyer_square_keeps_its_zeros_and_reports_the_pair(tmp_path):
    cfg = small_run("lenet300", "l0", epochs=2, ft_epochs=1, plus="hoyer", plus_lam=1e-3)
    pipe = Pipeline(cfg, tmp_path, {"method": {"name": "l0", "plus": "hoyer"}})
    results = pipe.run()
    assert results["method"]["plus"] == "hoyer" and results["method"]["plus_lam"] == 1e-3
    assert results["final"]["sparsity"] > 0
    for key, mask in pipe.masks.items():
        assert torch.all(dict(pipe.model.named_parameters())[key][~mask] == 0)  # held through finetuning


def test_targeted_dropout_takes_a_penalty_too():
    torch.manual_seed(0)
    model = _lenet_like()
    method = build_method(TDConfig(gamma=0.5, alpha=0.5, plus="l1", plus_lam=1e-2), n_train=1000, input_shape=(1, 4, 4))
    method.attach(model)
    expected = 1e-2 * sum(raw_weight(model[i]).abs().sum() for i in (1, 3))
    assert torch.allclose(method.penalty(model), expected)
    # the penalty's prune rule reads the weights as evaluation computes them, not a random dropout draw
    seen, rule = [], method.extra.weight_masks
    method.extra.weight_masks = lambda m, prune: (seen.append(m.training), rule(m, prune))[1]
    model.train()
    method.masks(model, PruneConfig())
    assert seen == [False] and model.training


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: L0Config(plus="l0", plus_lam=1.0), "method.plus adds a weight penalty to method=l0: choose one of l1, l2"),
        (lambda: HoyerConfig(plus="hoyer", plus_lam=1.0), "choose one of l1, l2, group_hoyer, group_lasso"),
        (lambda: L0Config(plus="hoyer"), "method.plus=hoyer needs method.plus_lam > 0"),
    ],
)
def test_bad_combinations_are_refused_with_what_to_do(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_with_a_target_the_added_penalty_is_steered_and_the_gates_lam_stays(tmp_path):
    # hoyer lands 70% on this data near lam 4e-5..9e-5 (test_target_sparsity.py): start 10x below
    cfg = steering_run("l0", lam=0.1, plus="hoyer", plus_lam=3e-6, target_sparsity=0.7)
    pipe = Pipeline(cfg, tmp_path, {})
    results = pipe.run()
    report = results["method"]
    assert results["final"]["sparsity"] == pytest.approx(0.7, abs=0.01)  # the cut lands on the target
    assert report["lam_start"] == 3e-6 and report["lam_final"] / report["lam_start"] > 5
    # what the pair reached before the cut: closed gates and the penalty's zeros together
    assert report["steered_sparsity"] == pytest.approx(0.7, abs=0.1)
    assert pipe.method.inner.inner.lam_scale == 1.0  # L0's lambda is the one set
    assert results["final"]["test_acc"] > 0.75  # L0 alone: 0.905 here, dense; 0.80 measured at 70%


def test_magnitude_keeps_its_target_sparsity_with_a_penalty():
    cfg = MagnitudeConfig(plus="hoyer", plus_lam=1e-4)  # target_sparsity is magnitude's cut, not a steered lam
    assert cfg.target_sparsity == 0.9


def test_a_wrapper_forwards_every_hook_of_the_method_interface():
    # A hook added to Method but not to Wrapped would silently drop the inner method's
    # behaviour under method.plus and method.target_sparsity.
    from sparsity_bench.methods.base import Method, Wrapped

    hooks = {name for name, f in vars(Method).items() if callable(f) and not name.startswith("_")}
    forwarded = {name for name in vars(Wrapped) if not name.startswith("_")}
    # masks is Method's own: the wrapper's weight_masks plus the BatchNorm channels they remove
    assert hooks - forwarded == {"masks"}
