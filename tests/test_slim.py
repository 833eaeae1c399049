"""Physical slimming, its FLOPs against the structural count, slim.pt, and measured speed."""
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparsity_bench.metrics import measure
from sparsity_bench.metrics.flops import dense_flops
from sparsity_bench.metrics.slim import check_loads_standalone, max_abs_diff, save, slim
from sparsity_bench.metrics.sparsity import prunable_layers
from sparsity_bench.metrics.speed import csr_linear_speed, model_speed, paired_speedup
from sparsity_bench.models import LeNet5, LeNet300
from sparsity_bench.pipeline import Pipeline

from conftest import small_run

SHAPE = (1, 28, 28)


def _flop_counter(model, shape=SHAPE):
    with FlopCounterMode(display=False) as c, torch.no_grad():
        model(torch.zeros(1, *shape))
    return c.get_total_flops()


def _inputs(n=32, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _widths(model):
    return [(m.weight.shape[1], m.weight.shape[0]) for _, m in prunable_layers(model)]


def test_dense_flops_of_both_models_match_flop_counter():
    for model in (LeNet300(), LeNet5()):
        assert dense_flops(model, SHAPE) == _flop_counter(model)


@torch.no_grad()
def test_l0_architecture_on_lenet300_is_exactly_2_ab_bc_10c():
    model = LeNet300()
    fc1, fc2, fc3 = model.net[1], model.net[3], model.net[5]
    a, b, c = 219, 214, 100
    fc1.weight[:, a:] = 0  # pixels nobody reads
    fc2.weight[:, b:] = 0  # hidden units of fc1 nobody reads
    fc3.weight[:, c:] = 0
    m = measure(model, SHAPE)
    assert m["architecture"] == "219-214-100"
    assert m["flops_structural"] == 2 * (a * b + b * c + 10 * c)
    result = slim(model, _inputs(), fold=False)
    assert _flop_counter(result.model) == m["flops_structural"]
    assert _widths(result.model) == [(a, b), (b, c), (c, 10)]
    assert result.inputs_kept == a
    assert max_abs_diff(model, result.model, _inputs()) < 1e-5


@torch.no_grad()
def test_structural_flops_of_hand_made_masks_on_lenet5_equal_the_slimmed_model():
    model = LeNet5()
    conv1, conv2, fc1, fc2 = model.features[0], model.features[3], model.classifier[1], model.classifier[3]
    conv1.weight[9:] = 0  # 9 filters emit: the others have zero weights and biases
    conv1.bias[9:] = 0
    conv2.weight[18:] = 0  # 18 filters have weights; 18..29 still emit their bias (kept without folding)
    conv2.bias[30:] = 0
    fc1.weight[:, 40 * 16 :] = 0  # channels 40..49 are not read
    fc1.weight[:, 5 * 16 + 3] = 0  # one feature of a read channel: the channel stays
    fc2.weight[:, 65:] = 0  # 65 of the 500 hidden units are read
    m = measure(model, SHAPE)
    result = slim(model, _inputs(), fold=False)
    assert _flop_counter(result.model) == m["flops_structural"]
    assert _widths(result.model) == [(1, 9), (9, 30), (30 * 16, 65), (65, 10)]
    assert max_abs_diff(model, result.model, _inputs()) < 1e-5


@torch.no_grad()
def test_removal_propagates_to_a_fixpoint():
    model = LeNet300(hidden=(20, 10))
    fc1, fc2, fc3 = model.net[1], model.net[3], model.net[5]
    fc1.weight[:5] = 0  # units 0..4 of fc1 emit nothing
    fc1.bias[:5] = 0
    fc2.weight[0, 5:] = 0  # fc2 unit 0 reads only those dead units: it emits nothing once they are gone
    fc2.bias[0] = 0
    fc3.weight[:, 1] = 0  # fc2 unit 1 is read by nobody ...
    fc2.weight[1:, 5] = 0  # ... and it was the only reader of fc1 unit 5
    m = measure(model, SHAPE)
    result = slim(model, _inputs(), fold=False)
    assert _widths(result.model)[:2] == [(784, 14), (14, 8)]
    assert _flop_counter(result.model) == m["flops_structural"]
    assert max_abs_diff(model, result.model, _inputs()) < 1e-5


@torch.no_grad()
def test_unit_dead_only_because_the_next_layer_does_not_read_it_is_removed():
    model = LeNet300()
    fc1, fc2 = model.net[1], model.net[3]
    fc2.weight[:, 7] = 0  # fc1 unit 7 has weights and a bias, but nothing reads it
    result = slim(model, _inputs())
    assert _widths(result.model)[:2] == [(784, 299), (299, 100)]
    assert result.removed == {"net.1": 1}
    assert max_abs_diff(model, result.model, _inputs()) < 1e-5


def _random_structured(model, seed):
    """Random dead units per layer (rows, some with a bias left), dead inputs, and element-wise zeros."""
    g = torch.Generator().manual_seed(seed)
    layers = [m for _, m in prunable_layers(model)]
    with torch.no_grad():
        for i, m in enumerate(layers):
            w = m.weight
            w.mul_(torch.rand(w.shape, generator=g) > 0.3)  # element-wise zeros
            if i < len(layers) - 1:
                rows = torch.randperm(w.shape[0], generator=g)[: int(0.4 * w.shape[0])]
                w[rows] = 0
                m.bias[rows[: len(rows) // 2]] = 0  # half of them emit nothing; the others a constant
            cols = torch.randperm(w.shape[1], generator=g)[: int(0.3 * w.shape[1])]
            w[:, cols] = 0


@pytest.mark.parametrize("model_cls", [LeNet300, LeNet5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slimmed_model_matches_the_masked_one_for_random_structured_masks(model_cls, seed):
    torch.manual_seed(seed)
    model = model_cls().eval()
    _random_structured(model, seed)
    x = _inputs(64, seed)
    structural = measure(model, SHAPE)["flops_structural"]

    kept = slim(model, x, fold=False)
    assert kept.folded == 0
    assert max_abs_diff(model, kept.model, x) < 1e-5
    assert _flop_counter(kept.model) == structural

    folded = slim(model, x, fold=True)
    assert folded.folded > 0
    assert max_abs_diff(model, folded.model, _inputs(64, seed + 100)) < 1e-5  # other inputs than those slimmed on
    assert _flop_counter(folded.model) < structural


@torch.no_grad()
def test_bias_only_unit_is_folded_into_the_next_bias_or_kept():
    model = LeNet300()
    fc1 = model.net[1]
    fc1.weight[3] = 0
    fc1.bias[3] = 0.5  # emits relu(0.5) whatever the input
    assert _widths(slim(model, _inputs(), fold=False).model)[0] == (784, 300)
    folded = slim(model, _inputs(), fold=True)
    assert folded.folded == 1 and _widths(folded.model)[0] == (784, 299)
    assert max_abs_diff(model, folded.model, _inputs(seed=5)) < 1e-5


class _TinyResNet(nn.Module):
    """stem conv-BN-ReLU, one residual block (conv-BN-ReLU-conv-BN + identity), pooling, classifier."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        x = torch.relu(x + y)
        return self.fc(x.mean(dim=(2, 3)))


@torch.no_grad()
def test_residual_channel_goes_only_when_every_coupled_layer_agrees():
    model = _TinyResNet().eval()
    for bn in (model.stem[1], model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.bias.uniform_(-0.5, 0.5)
    stem, bn0 = model.stem[0], model.stem[1]
    # stream channel 2: nothing writes it (stem and block zero, both BNs map 0 to 0) -> removed everywhere
    for conv, bn in ((stem, bn0), (model.conv2, model.bn2)):
        conv.weight[2] = 0
        bn.running_mean[2] = 0
        bn.bias[2] = 0
    # stream channel 5: the stem writes nothing, but the block does -> kept
    stem.weight[5] = 0
    bn0.running_mean[5] = 0
    bn0.bias[5] = 0
    # stream channel 6: the classifier does not read it, but conv1 does -> kept
    model.fc.weight[:, 6] = 0
    x = torch.rand(16, 1, 8, 8)
    result = slim(model, x)
    assert getattr(result.model.stem, "0").out_channels == 7
    assert result.model.conv2.out_channels == 7 and result.model.fc.in_features == 7
    assert max_abs_diff(model, result.model, x) < 1e-5


def test_slim_pt_loads_and_runs_without_sparsity_bench(tmp_path):
    model = LeNet5()
    with torch.no_grad():
        model.features[3].weight[10:] = 0
        model.features[3].bias[10:] = 0
    result = slim(model, _inputs())
    path = save(result.model, tmp_path / "slim.pt")
    check_loads_standalone(path, SHAPE)  # raises when it does not
    again = torch.load(path, weights_only=False)
    assert max_abs_diff(model, again, _inputs()) < 1e-5


def test_speed_numbers_are_positive_and_quick():
    model = LeNet300()
    with torch.no_grad():
        model.net[1].weight.mul_(torch.rand_like(model.net[1].weight) > 0.9)
        model.net[3].weight[:, 150:] = 0
    x = _inputs(16)
    slimmed = slim(model, x).model
    table = model_speed(model, slimmed, x, torch.device("cpu"), batch_sizes=(1, 32), repeats=2, warmup=1)
    for b in (1, 32):
        row = table[f"batch_{b}"]
        assert row["dense_ms"] > 0 and row["slim_ms"] > 0 and row["speedup"] > 0
    csr = csr_linear_speed(model, x, torch.device("cpu"), batch=32, repeats=2, warmup=1)
    assert csr["dense_ms"] > 0 and csr["csr_ms"] > 0 and isinstance(csr["beats_dense"], bool)
    assert csr["layers"]["net.1"]["density"] == pytest.approx(0.1, abs=0.02)


def test_speedup_pairs_each_dense_round_with_its_slim_round():
    # A load that doubles every time in the middle rounds slows both models of a pair alike:
    # the paired ratios stay 2.0, where the medians of each model's times alone give 2.0 only by luck.
    dense, slim_ = [2.0, 4.0, 8.0, 2.0, 2.0], [1.0, 2.0, 4.0, 1.0, 1.0]
    assert paired_speedup(dense, slim_) == {"speedup": 2.0, "speedup_quartiles": [2.0, 2.0], "steady": True}
    # ratios 1, 2, 3, 4, 5: median 3, quartiles 1.5 and 4.5 (statistics' exclusive method): 3x apart
    busy = paired_speedup([1.0, 2.0, 3.0, 4.0, 5.0], [1.0] * 5)
    assert busy["speedup"] == 3.0 and busy["speedup_quartiles"] == [1.5, 4.5] and busy["steady"] is False


def test_pipeline_fills_final_and_survives_a_slimming_failure(tmp_path, monkeypatch):
    cfg = small_run("lenet300", "magnitude", epochs=0, ft_epochs=0, target_sparsity=0.9)
    results = Pipeline(cfg, tmp_path / "ok", {}).run()
    final = results["final"]
    assert final["slim_max_abs_diff"] < 1e-5 and final["speedup_measured"] > 0
    assert isinstance(final["speedup_steady"], bool)
    assert final["flops_slim"] <= final["flops_structural"]
    assert set(results["speed"]) >= {"device", "batch_1", "batch_64", "csr_linear_speedup"}
    assert (tmp_path / "ok" / "slim.pt").is_file()

    def broken(*args, **kwargs):
        raise RuntimeError("no surgery today")

    monkeypatch.setattr("sparsity_bench.pipeline.slim_model", broken)
    results = Pipeline(cfg, tmp_path / "broken", {}).run()
    saved = json.loads((tmp_path / "broken" / "results.json").read_text())
    assert saved["status"] == "finished" and saved["final"]["test_acc"] == results["final"]["test_acc"]
    assert saved["final"]["slim_error"] == "RuntimeError: no surgery today"
    assert saved["final"]["speedup_measured"] is None


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, the dependency graph can."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.sum() > 0:
            h = h * 1.0
        return self.b(h)


@torch.no_grad()
def test_untraceable_model_is_still_slimmed_but_not_standalone():
    model = _Branchy()
    model.b.weight[:, :3] = 0
    x = torch.randn(16, 4)
    result = slim(model, x)
    assert result.removed == {"a": 3} and "torch.fx" in result.standalone
    assert max_abs_diff(model, result.model, x) < 1e-5
