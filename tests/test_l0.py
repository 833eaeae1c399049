"""L0 regularization with hard-concrete gates, checked against hand computations."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsity_bench.cli import preflight
from sparsity_bench.config import ConfigError, GateGranularity, L0Config
from sparsity_bench.methods import METHODS
from sparsity_bench.methods.l0 import EPS, L0, deterministic_gate, prob_nonzero, sample_gate
from sparsity_bench.models import LeNet5, LeNet300
from sparsity_bench.metrics.sparsity import prunable_layers
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import _param, apply_masks

from conftest import small_run

LOG_1_11 = math.log(1 / 11)  # sigmoid(a) * 1.2 - 0.1 <= 0  iff  sigmoid(a) <= 1/12  iff  a <= log(1/11)
LOG_11 = math.log(11)  # sigmoid(a) * 1.2 - 0.1 >= 1  iff  sigmoid(a) >= 11/12  iff  a >= log(11)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _attach(model, n_train=1000, **kw):
    method = L0(L0Config(**kw), n_train, (1, 28, 28))
    method.attach(model)
    return method


def _set_log_alpha(method, value):
    with torch.no_grad():
        for layer in method.layers:
            layer.log_alpha.fill_(value)


def test_registered_with_paper_defaults():
    cfg = L0Config()
    assert METHODS["l0"] is L0
    assert (cfg.lam, cfg.granularity, cfg.droprate_init, cfg.droprate_init_first) == (0.1, GateGranularity.neuron, 0.5, 0.2)
    assert (cfg.weight_decay, cfg.per_example, cfg.lam_per_layer) == (0.0, False, None)


def test_prob_nonzero_matches_hand_formula():
    # P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)), beta = 2/3, -gamma/zeta = 1/11
    for a in (-3.0, -1.0, 0.0, 0.7, 4.0):
        by_hand = 1 / (1 + math.exp(-(a - (2 / 3) * math.log(0.1 / 1.1))))
        assert prob_nonzero(torch.tensor(a, dtype=torch.float64)).item() == pytest.approx(by_hand, rel=1e-12)
    assert prob_nonzero(torch.tensor(0.0)).item() == pytest.approx(1 / (1 + 11 ** (-2 / 3)), rel=1e-6)


def test_prob_nonzero_agrees_with_sampled_gates():
    torch.manual_seed(0)
    la = torch.tensor([-2.0, 0.0, 1.5])
    z = sample_gate(la, (100_000, 3))
    assert torch.allclose((z != 0).float().mean(0), prob_nonzero(la), atol=0.01)


def test_deterministic_gate_is_exactly_zero_and_one_beyond_the_thresholds():
    la = torch.tensor([-10.0, LOG_1_11 - 1e-4, LOG_1_11 + 1e-2, 0.0, LOG_11 - 1e-2, LOG_11 + 1e-4, 10.0])
    z = deterministic_gate(la)
    assert z[0] == 0 and z[1] == 0
    assert 0 < z[2] < 0.01
    assert z[3] == pytest.approx(0.5)  # sigmoid(0) * 1.2 - 0.1
    assert 0.99 < z[4] < 1
    assert z[5] == 1 and z[6] == 1


def test_sample_and_its_gradient_match_the_formula():
    las = [torch.randn(5, requires_grad=True), torch.randn(2, 3, requires_grad=True)]
    weights = [torch.randn(5), torch.randn(2, 3)]
    torch.manual_seed(3)
    u = torch.empty(11).uniform_(EPS, 1 - EPS)  # the draw sample_gate makes for both tensors at once
    ref_la = [la.detach().clone().requires_grad_() for la in las]
    flat = torch.cat([la.reshape(-1) for la in ref_la])
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + flat) / (2 / 3))
    z_ref = torch.clamp(s * 1.2 - 0.1, 0, 1)
    (z_ref * torch.cat([w.reshape(-1) for w in weights])).sum().backward()

    from sparsity_bench.methods.l0 import _HardConcrete

    torch.manual_seed(3)
    zs = _HardConcrete.apply(*las)
    sum((z * w).sum() for z, w in zip(zs, weights)).backward()
    assert torch.allclose(torch.cat([z.reshape(-1) for z in zs]), z_ref, atol=1e-6)
    for la, ref in zip(las, ref_la):
        assert torch.allclose(la.grad, ref.grad, atol=1e-5)


def test_training_gates_lie_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    z = sample_gate(torch.zeros(1000), (200, 1000))
    assert z.min() == 0 and z.max() == 1
    assert 0.05 < (z == 0).float().mean() < 0.5 and 0.05 < (z == 1).float().mean() < 0.5
    assert ((z > 0) & (z < 1)).any()


def test_penalty_scales_with_one_over_n_and_with_group_size():
    lam, p0 = 0.3, 1 / (1 + 11 ** (-2 / 3))  # P(z != 0) at log_alpha = 0
    totals = {}
    for granularity in ("neuron", "weight"):
        for n in (1000, 2000):
            layer = nn.Linear(4, 3)
            method = _attach(layer, n_train=n, lam=lam, weight_decay=0.0, granularity=granularity)
            _set_log_alpha(method, 0.0)
            totals[granularity, n] = method.penalty(layer).item()
    # neuron: 4 gates (input features) of 3 weights each; weight: 12 gates of 1 weight
    assert totals["neuron", 1000] == pytest.approx(4 * p0 * lam * 3 / 1000, rel=1e-6)
    assert totals["weight", 1000] == pytest.approx(12 * p0 * lam * 1 / 1000, rel=1e-6)
    for g in ("neuron", "weight"):
        assert totals[g, 1000] == pytest.approx(2 * totals[g, 2000], rel=1e-6)


def test_penalty_weight_decay_term_uses_group_norms_and_biases():
    torch.manual_seed(0)
    model = Tiny()
    method = _attach(model, n_train=500, lam=0.2, weight_decay=0.01)
    with torch.no_grad():
        method.layers[0].log_alpha.copy_(torch.tensor([-1.0, 0.0, 2.0]))
        method.layers[1].log_alpha.uniform_(-2, 2)
    conv_w, conv_b = model.conv.parametrizations.weight.original, model.conv.parametrizations.bias.original
    fc_w, fc_b = model.fc.parametrizations.weight.original, model.fc.bias
    p_conv, p_fc = prob_nonzero(method.layers[0].log_alpha), prob_nonzero(method.layers[1].log_alpha)
    by_hand = (
        p_conv.sum() * 0.2 * 18 / 500 + p_fc.sum() * 0.2 * 5 / 500  # |g| = 2*3*3 per filter, 5 per fc input
        + 0.5 * 0.01 * (p_conv * (conv_w.pow(2).sum((1, 2, 3)) + conv_b.pow(2))).sum()  # filter bias in its group
        + 0.5 * 0.01 * (p_fc * fc_w.pow(2).sum(0)).sum()
        + 0.5 * 0.01 * fc_b.pow(2).sum()  # Linear bias: ungated, plain L2 (positive)
    )
    pen = method.penalty(model)
    assert pen.item() == pytest.approx(by_hand.item(), rel=1e-5)
    params = [conv_w, conv_b, fc_w, fc_b] + [layer.log_alpha for layer in method.layers]
    expected = torch.autograd.grad(by_hand, params)
    for got, want in zip(torch.autograd.grad(pen, params), expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)


def test_log_alpha_init_and_clamp_after_step():
    torch.manual_seed(0)
    model = LeNet300()
    method = _attach(model)  # droprate 0.2 first layer, 0.5 elsewhere
    first, second = method.layers[0].log_alpha, method.layers[1].log_alpha
    assert first.mean().item() == pytest.approx(math.log(0.8 / 0.2), abs=3e-3)
    assert second.mean().item() == pytest.approx(0.0, abs=3e-3)
    assert 0.005 < second.std().item() < 0.02
    with torch.no_grad():
        first[:3] = torch.tensor([-20.0, 20.0, 1.0])
    method.step(0.5)
    assert first[:3].tolist() == pytest.approx([math.log(1e-2), math.log(1e2), 1.0])


def test_one_sample_per_minibatch_and_a_fresh_one_per_forward():
    torch.manual_seed(0)
    layer = nn.Linear(50, 1, bias=False)
    method = _attach(layer)
    with torch.no_grad():
        layer.parametrizations.weight.original.fill_(1.0)
    x = torch.ones(4, 50)
    layer.train()
    a, b = layer(x), layer(x)
    assert torch.all(a == a[0]) and not torch.equal(a, b)  # shared within a batch, fresh per forward
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    assert layer(x)[0].item() == pytest.approx(deterministic_gate(method.layers[0].log_alpha).sum().item(), rel=1e-6)


def test_reading_weight_outside_a_forward_gives_the_deterministic_gate():
    layer = nn.Linear(6, 2)
    method = _attach(layer)
    layer.train()
    z = deterministic_gate(method.layers[0].log_alpha)
    assert torch.equal(layer.weight, layer.parametrizations.weight.original * z)


def test_conv_bias_is_gated_with_its_filter_in_training():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3)
    method = _attach(conv)
    with torch.no_grad():
        method.layers[0].log_alpha.copy_(torch.tensor([-40.0, 40.0]))  # closed / open in every sample
        conv.parametrizations.bias.original.fill_(1.0)
    conv.train()
    out = conv(torch.rand(2, 1, 5, 5))
    assert torch.all(out[:, 0] == 0) and torch.all(out[:, 1] != 0)


def test_per_example_gates_differ_across_the_batch():
    torch.manual_seed(0)
    for model, x in ((nn.Linear(50, 1), torch.ones(8, 50)), (nn.Conv2d(1, 20, 1), torch.ones(8, 1, 2, 2))):
        _attach(model, per_example=True)
        with torch.no_grad():
            model.parametrizations.weight.original.fill_(1.0)
        model.train()
        y = model(x).flatten(1)
        assert not torch.all(y == y[0])
        model.eval()
        y = model(x).flatten(1)
        assert torch.all(y == y[0])


def test_masks_are_the_closed_gates_and_detach_keeps_eval_outputs():
    torch.manual_seed(0)
    for model in (LeNet300(), LeNet5()):
        method = _attach(model)
        with torch.no_grad():
            for layer in method.layers:
                layer.log_alpha.uniform_(-5, 5)
        model.eval()
        x = torch.rand(16, 1, 28, 28)
        expected = model(x)
        masks = method.masks(model, None)
        for layer in method.layers:
            closed = deterministic_gate(layer.log_alpha) == 0
            mask = masks[f"{layer.name}.weight"]
            assert mask.shape == layer.module.weight.shape
            units = mask.any(0) if isinstance(layer.module, nn.Linear) else mask.flatten(1).any(1)
            assert torch.equal(units, ~closed) and closed.any()
        method.detach(model)
        apply_masks(model, masks)
        assert not any(parametrize.is_parametrized(m) for m in model.modules())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert all(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        model.train()
        assert torch.allclose(model(x), expected, atol=1e-6)
        for key, mask in masks.items():
            assert torch.all(_param(model, key)[~mask] == 0)


def test_state_dict_round_trip_into_a_fresh_attached_model():
    torch.manual_seed(0)
    a, b = LeNet5(), LeNet5()
    ma, _ = _attach(a), _attach(b)
    with torch.no_grad():
        ma.layers[1].log_alpha.uniform_(-4, 4)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(a(x), b(x))


def test_scalars_match_hand_counts():
    model = LeNet300()
    method = _attach(model)
    _set_log_alpha(method, 0.0)
    with torch.no_grad():
        method.layers[2].log_alpha[:25] = -5.0
    p0, p5 = prob_nonzero(torch.tensor(0.0)).item(), prob_nonzero(torch.tensor(-5.0)).item()
    s = method.scalars(model)
    assert s["closed/net.1"] == 0 and s["closed/net.5"] == 0.25
    assert s["expected_l0"] == pytest.approx(784 * p0 * 300 + 300 * p0 * 100 + (75 * p0 + 25 * p5) * 10, rel=1e-5)
    last_in = 75 * p0 + 25 * p5  # fc3's open inputs are fc2's open outputs
    flops = 2 * (784 * p0) * (300 * p0) + 2 * (300 * p0) * last_in + 2 * last_in * 10
    assert s["expected_flops"] == pytest.approx(flops, rel=1e-5)
    hist = method.histograms(model)
    assert set(hist) == {f"{k}/net.{i}" for k in ("log_alpha", "gate") for i in (1, 3, 5)}


def test_expected_flops_of_lenet5_use_output_positions():
    model = LeNet5()
    method = _attach(model)
    _set_log_alpha(method, 20.0)  # every gate open: P ~ 1, the dense count
    assert method.scalars(model)["expected_flops"] == pytest.approx(4_586_000, rel=1e-6)


def test_lam_per_layer_length_is_checked():
    with pytest.raises(ConfigError, match="has 2 values but the model has 3 prunable layers"):
        _attach(LeNet300(), lam_per_layer=[0.1, 0.2])
    method = _attach(LeNet300(), lam_per_layer=[1.0, 0.0, 2.0])
    assert [layer.lam for layer in method.layers] == [1.0, 0.0, 2.0]


def test_bad_configs_are_refused_in_one_sentence():
    for args, expected in [
        (["method=l0", "method.granularity=bad"], "Invalid value for 'method.granularity'"),
        (["method=l0", "method.foo=1"], "Unknown config key 'method.foo'"),
        (["method=l0", "method.per_example=true", "method.granularity=weight"], "method.per_example=true needs"),
        (["method=l0", "method.droprate_init=1"], "method.droprate_init must lie in (0, 1)"),
        (["method=l0", "method.target_sparsity=1.5"], "method.target_sparsity must lie in [0, 1)"),
    ]:
        problem = preflight(args)
        assert problem is not None and expected in problem and "\n" not in problem
    assert preflight(["method=l0", "method.lam_per_layer=[0.1,0.1,0.1]", "method.granularity=weight"]) is None


def test_gates_of_useless_inputs_close():
    torch.manual_seed(0)
    layer = nn.Linear(8, 1)
    method = _attach(layer, n_train=100, lam=10.0, droprate_init_first=0.5)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer.train()
    for _ in range(80):
        x = torch.randn(64, 8)
        y = x[:, :3] @ torch.tensor([[1.0], [-2.0], [3.0]])
        loss = (layer(x) - y).pow(2).mean() + method.penalty(layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.step(0.0)
    closed = deterministic_gate(method.layers[0].log_alpha) == 0
    assert closed.tolist() == [False] * 3 + [True] * 5


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_end_to_end_on_synthetic(tmp_path, model, monkeypatch):
    attach = L0.attach

    def attach_with_some_gates_closed(self, net):  # so that a short run has something pruned
        attach(self, net)
        with torch.no_grad():
            for layer in self.layers[:-1]:
                layer.log_alpha[::3] = -4.0

    monkeypatch.setattr(L0, "attach", attach_with_some_gates_closed)
    cfg = small_run(model, "l0", epochs=2, ft_epochs=1, droprate_init=0.05, droprate_init_first=0.05)
    pipe = Pipeline(cfg, tmp_path, {"method": {"name": "l0"}})
    results = pipe.run()
    assert results["final"]["test_acc"] > 0.5
    assert results["final"]["sparsity"] > 0.2
    assert not any(parametrize.is_parametrized(m) for m in pipe.model.modules())
    for key, mask in pipe.masks.items():
        assert (~mask).any() or key.endswith(("net.5.weight", "classifier.3.weight"))
        assert torch.all(_param(pipe.model, key)[~mask] == 0)
    # the architecture counts the units whose gates stayed open
    kept = []
    for name, m in prunable_layers(pipe.model):
        mask = pipe.masks[f"{name}.weight"]
        kept.append(int((mask.any(0) if isinstance(m, nn.Linear) else mask.flatten(1).any(1)).sum()))
    assert results["final"]["architecture"] == "-".join(map(str, kept))
