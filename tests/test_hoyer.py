import math

import pytest
import torch

from sparsity_bench.config import GroupHoyerConfig, HoyerConfig
from sparsity_bench.methods.hoyer import GroupHoyer, Hoyer, group_hoyer_square, group_lasso, hoyer_square
from sparsity_bench.models import LeNet300
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import _param

from conftest import small_run


def test_hoyer_square_equals_the_formula():
    w = torch.tensor([[3.0, -4.0], [0.0, 1.0]])
    assert hoyer_square(w).item() == pytest.approx((3 + 4 + 0 + 1) ** 2 / (9 + 16 + 0 + 1))
    # one non-zero weight: HS = 1 (the sparsest); n equal weights: HS = n (the densest)
    assert hoyer_square(torch.tensor([0.0, 0.0, 5.0])).item() == pytest.approx(1.0)
    assert hoyer_square(torch.full((7,), -0.3)).item() == pytest.approx(7.0)


def test_group_hoyer_square_equals_the_formula_on_linear_and_conv():
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 2.0, 0.0]])  # Linear [out=2, in=3]
    rows = math.sqrt(5) + 2.0  # ||(1,2,0)|| + ||(0,2,0)||
    cols = 1.0 + math.sqrt(8) + 0.0  # input groups: columns
    fro = 1 + 4 + 4
    assert group_hoyer_square(w).item() == pytest.approx((rows**2 + cols**2) / fro)
    assert group_lasso(w).item() == pytest.approx(rows + cols, rel=1e-6)

    conv = torch.zeros(2, 3, 2, 2)
    conv[0, 1] = 1.0  # filter 0, input channel 1: norm 2
    conv[1, 2, 0, 0] = 3.0  # filter 1, input channel 2: norm 3
    filters = 2.0 + 3.0
    channels = 0.0 + 2.0 + 3.0
    assert group_hoyer_square(conv).item() == pytest.approx((filters**2 + channels**2) / (4 + 9))


@pytest.mark.parametrize("fn", [hoyer_square, group_hoyer_square, group_lasso])
def test_scale_invariance_and_finite_gradients_at_zero(fn):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 3, 3, generator=g)
    if fn is not group_lasso:  # the Hoyer measures are scale-invariant, lasso is not
        assert fn(w * 7.5).item() == pytest.approx(fn(w).item(), rel=1e-5)
    zero = torch.zeros(4, 3, requires_grad=True)
    fn(zero).backward()
    assert torch.isfinite(zero.grad).all()
    partly = torch.randn(4, 3, generator=g)
    partly[1] = 0
    partly[:, 2] = 0
    partly.requires_grad_(True)
    fn(partly).backward()
    assert torch.isfinite(partly.grad).all()


def test_penalty_sums_layers_and_scales_with_lam():
    model = LeNet300()
    ws = [model.net[i].weight for i in (1, 3, 5)]
    hs = Hoyer(HoyerConfig(lam=2e-4), n_train=100)
    assert hs.penalty(model).item() == pytest.approx(2e-4 * sum(hoyer_square(w).item() for w in ws), rel=1e-5)
    gh = GroupHoyer(GroupHoyerConfig(lam=1e-3, l2=1e-2), n_train=100)
    expected = sum(1e-3 * group_hoyer_square(w).item() + 1e-2 * w.pow(2).sum().item() for w in ws)
    assert gh.penalty(model).item() == pytest.approx(expected, rel=1e-5)
    assert Hoyer(HoyerConfig(lam=0.0), n_train=100).penalty(model) is None


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
@pytest.mark.parametrize("method", ["hoyer", "group_hoyer", "group_lasso"])
def test_end_to_end_on_synthetic(tmp_path, model, method):
    cfg = small_run(model, method, lam=1e-5)
    pipe = Pipeline(cfg, tmp_path, {})
    results = pipe.run()
    assert results["final"]["test_acc"] > 0.5
    assert results["final"]["sparsity"] > 0.0
    for key, mask in pipe.masks.items():
        assert torch.all(_param(pipe.model, key)[~mask] == 0)


@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 2, 2)])
def test_written_out_gradients_match_autograd_of_the_formula(shape):
    """hoyer_square, group_hoyer_square and group_lasso carry hand-written backward passes: check them."""
    from sparsity_bench.methods.hoyer import EPS

    g = torch.Generator().manual_seed(1)
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    w[0] = 0  # an all-zero output group
    w[:, 1] = 0  # an all-zero input group

    def hs_formula(v):
        return v.abs().sum().pow(2) / (v.pow(2).sum() + EPS)

    def group_norms(v):
        out_n = (v.pow(2).flatten(1).sum(1) + EPS).sqrt()
        in_n = (v.pow(2).transpose(0, 1).flatten(1).sum(1) + EPS).sqrt()
        return out_n, in_n

    def gh_formula(v):
        out_n, in_n = group_norms(v)
        return (out_n.sum().pow(2) + in_n.sum().pow(2)) / (v.pow(2).sum() + EPS)

    def gl_formula(v):
        out_n, in_n = group_norms(v)
        return out_n.sum() + in_n.sum()

    for fn, formula in ((hoyer_square, hs_formula), (group_hoyer_square, gh_formula), (group_lasso, gl_formula)):
        a = w.clone().requires_grad_(True)
        b = w.clone().requires_grad_(True)
        (3.0 * fn(a)).backward()
        (3.0 * formula(b)).backward()
        assert fn(w).item() == pytest.approx(formula(w).item(), rel=1e-9)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9)
        assert torch.autograd.gradcheck(fn, (w.clone().add_(0.1).requires_grad_(True),))
