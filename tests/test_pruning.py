import pytest
import torch

from sparsity_bench.config import PruneConfig, PruneRule, Scope
from sparsity_bench.pruning import apply_masks, damage_warning, heaviest_tail, magnitude_masks


def test_std_rule_matches_hand_threshold():
    w = torch.tensor([[0.1, -0.5, 2.0], [-0.05, 1.0, 0.0]])
    thr = 0.25 * w.std()
    masks = magnitude_masks({"a.weight": w}, PruneConfig(rule=PruneRule.std, threshold=0.25))
    assert torch.equal(masks["a.weight"], (w.abs() >= thr) & (w != 0))


def test_abs_rule_and_zeros_stay_masked():
    w = torch.tensor([0.0, 1e-5, 1e-3, -2.0])
    masks = magnitude_masks({"a.weight": w}, PruneConfig(rule=PruneRule.abs, threshold=1e-4))
    assert masks["a.weight"].tolist() == [False, False, True, True]


@pytest.mark.parametrize("scope", [Scope.layer, Scope.global_])
def test_sparsity_rule_prunes_exactly_the_asked_fraction(scope):
    g = torch.Generator().manual_seed(0)
    ws = {"a.weight": torch.randn(100, 50, generator=g), "b.weight": 3 * torch.randn(10, 100, generator=g)}
    masks = magnitude_masks(ws, PruneConfig(rule=PruneRule.sparsity, sparsity=0.9, scope=scope))
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == 600
    if scope == Scope.layer:
        assert int(masks["a.weight"].sum()) == 500 and int(masks["b.weight"].sum()) == 100
    # every kept weight is at least as large as every pruned one (within the scope)
    mags = torch.cat([w.abs().flatten() for w in ws.values()])
    keep = torch.cat([m.flatten() for m in masks.values()])
    if scope == Scope.global_:
        assert mags[keep].min() >= mags[~keep].max()


def test_target_sparsity_overrides_the_rule():
    w = torch.arange(1.0, 11.0)
    masks = magnitude_masks({"a.weight": w}, PruneConfig(rule=PruneRule.std), target_sparsity=0.3)
    assert masks["a.weight"].tolist() == [False] * 3 + [True] * 7


def test_apply_masks_zeroes_in_place():
    lin = torch.nn.Linear(3, 2)
    model = torch.nn.Sequential(lin)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    apply_masks(model, {"0.weight": mask})
    assert torch.equal(lin.weight != 0, mask)


def test_pruning_that_wrecks_accuracy_is_named_with_its_cause():
    lin = torch.nn.Linear(100, 10)
    with torch.no_grad():
        lin.weight.fill_(0.01)
        lin.weight[0, 0] = 100.0  # one weight dominates std: std-scaled thresholds cut everything else
    masks = {"weight": torch.ones(10, 100, dtype=torch.bool)}
    tail = heaviest_tail(lin, masks)
    w = lin.weight.detach()
    assert tail == pytest.approx(float(w.abs().max() / w.std()), rel=1e-6) and tail > 10
    std = PruneConfig(rule="std", threshold=0.25)
    assert damage_warning(0.98, 0.60, 10, tail, std) is None  # lost less than half the way to chance (10%)
    assert damage_warning(None, None, 10, tail, std) is None  # no validation split: nothing to judge by
    message = damage_warning(0.98, 0.10, 10, tail, std)
    assert "98.00% to 10.00%" in message and "train.weight_decay" in message
    assert "weight_decay" not in damage_warning(0.98, 0.10, 10, tail, PruneConfig(rule="abs", threshold=0.1))
