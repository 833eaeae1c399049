"""The one-shot pruning curve (the Targeted Dropout paper's evaluation), for every method."""
import json

import pytest
import torch
from torch import nn

from sparsity_bench.cli import preflight
from sparsity_bench.config import ConfigError, CurveConfig
from sparsity_bench.curve import prune_curve
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import bottom_k_mask

from conftest import small_run

FRACTIONS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 2), nn.ReLU(), nn.Flatten(),  # columns: 8 filters of fan_in 2*2*2 = 8
        nn.Linear(8 * 3 * 3, 12), nn.ReLU(), nn.Linear(12, 4),  # fan_in 72 and 12, columns 12 and 4
    )


def _snapshots(fractions, granularity, exclude=()):
    """The curve, plus a copy of the pruned weights it scored at each fraction."""
    seen = []

    def score(m):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items() if k.endswith("weight")})
        return float(len(seen))

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    points = prune_curve(model, CurveConfig(fractions=fractions, granularity=granularity, exclude=list(exclude)), score)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model itself is untouched
    return model, points, seen


def test_weight_granularity_zeroes_k_of_every_column():
    model, points, seen = _snapshots(FRACTIONS, "weight")
    for f, weights in zip(FRACTIONS, seen):
        for key in ("0.weight", "3.weight", "5.weight"):
            w = weights[key]
            rows = w.reshape(w.shape[0], -1)  # one row per column (output unit) of the (fan_in, n_out) view
            fan_in = rows.shape[1]
            assert (rows == 0).sum(dim=1).tolist() == [round(f * fan_in)] * rows.shape[0]
            # the zeroed ones are the smallest of their column
            trained = model.state_dict()[key].reshape(rows.shape).abs()
            for i in range(rows.shape[0]):
                pruned, kept = trained[i][rows[i] == 0], trained[i][rows[i] != 0]
                if len(pruned) and len(kept):
                    assert pruned.max() < kept.min()
    total = sum(v.numel() for k, v in seen[0].items())
    for f, p in zip(FRACTIONS, points):
        assert p["fraction"] == f
        assert p["sparsity"] == pytest.approx(sum((v == 0).sum().item() for v in seen[FRACTIONS.index(f)].values()) / total)


def test_unit_granularity_zeroes_k_of_the_columns_by_norm():
    model, points, seen = _snapshots(FRACTIONS, "unit")
    for f, weights in zip(FRACTIONS, seen):
        for key in ("0.weight", "3.weight", "5.weight"):
            rows = weights[key].reshape(weights[key].shape[0], -1)
            dead = (rows == 0).all(dim=1)
            assert int(dead.sum()) == round(f * rows.shape[0])
            assert torch.all((rows[~dead] != 0).all(dim=1))  # the other columns are whole
            norms = model.state_dict()[key].reshape(rows.shape).norm(dim=1)
            if 0 < dead.sum() < len(dead):
                assert norms[dead].max() < norms[~dead].min()


def test_fraction_zero_scores_the_unpruned_model_and_exclude_is_respected():
    model = _model()
    x = torch.randn(64, 2, 4, 4)
    y = model(x).argmax(dim=1)
    acc = lambda m: (m(x).argmax(dim=1) == y).float().mean().item()  # noqa: E731
    points = prune_curve(model, CurveConfig(fractions=[0.0, 0.5], exclude=["5"]), acc)
    assert points[0]["test_acc"] == acc(model) == 1.0 and points[0]["sparsity"] == 0.0
    seen = []
    prune_curve(model, CurveConfig(fractions=[0.9], exclude=["0", "5"]), lambda m: seen.append(m) or 0.0)
    assert torch.equal(seen[0][0].weight, model[0].weight) and torch.equal(seen[0][5].weight, model[5].weight)
    assert (seen[0][3].weight == 0).float().mean() == pytest.approx(0.9, abs=0.01)
    with pytest.raises(ConfigError, match="curve.exclude names no prunable layer of this model: fc"):
        prune_curve(model, CurveConfig(exclude=["fc"]), acc)
    assert prune_curve(model, CurveConfig(fractions=[]), acc) == []


def test_bottom_k_mask_conv_columns_are_filters():
    w = torch.arange(1.0, 1.0 + 2 * 3 * 2 * 2).view(2, 3, 2, 2)  # filter 1 is larger everywhere
    w[0, 0, 0, 0] = 30.0  # the largest weight of filter 0, whose norm stays the smaller
    m = bottom_k_mask(w, 0.25, "weight")
    assert m[0].sum() == 3 and m[1].sum() == 3 and not m[0, 0, 0, 0]
    assert torch.equal(bottom_k_mask(w, 0.5, "unit"), torch.stack([torch.ones(3, 2, 2), torch.zeros(3, 2, 2)]).bool())


def test_bad_curve_config_is_refused():
    with pytest.raises(ConfigError, match="curve.fractions"):
        CurveConfig(fractions=[0.5, 1.5])
    assert "curve.granularity" in (preflight(["curve.granularity=filter"]) or "")
    assert "curve.fractions" in (preflight(["curve.fractions=[0.5,2]"]) or "")
    assert preflight(["curve.fractions=[]", "curve.granularity=unit", "curve.exclude=[net.5]"]) is None


def test_pipeline_writes_the_curve_for_any_method_and_can_turn_it_off(tmp_path):
    cfg = small_run("lenet300", "none", epochs=1, ft_epochs=0)
    cfg.curve = CurveConfig(fractions=[0.0, 0.5, 0.9], granularity="unit", exclude=["net.5"])
    results = Pipeline(cfg, tmp_path / "a", {}).run()
    curve = json.loads((tmp_path / "a" / "results.json").read_text())["prune_curve"]
    assert curve == results["prune_curve"] and [p["fraction"] for p in curve] == [0.0, 0.5, 0.9]
    assert curve[0]["test_acc"] == results["phases"]["train"]["test_acc"]  # none: the trained model as it is
    assert curve[0]["sparsity"] == 0 and 0.8 < curve[2]["sparsity"] < 0.9  # the classifier is spared
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "a" / "tb")).Reload()
    assert [e.step for e in events.Scalars("prune_curve/test_acc")] == [0, 50, 90]

    cfg.curve = CurveConfig(fractions=[])
    assert Pipeline(cfg, tmp_path / "b", {}).run()["prune_curve"] == []
