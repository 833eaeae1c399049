"""DeepHoyer (Yang, Wen, Li, ICLR 2020) and the group-lasso baseline.

Hoyer-Square and Group-HS are ratios of an L1-type norm to the L2 norm, so they
are scale-invariant: shrinking every weight leaves them unchanged, and the
gradient pushes small weights (or groups) to zero while sparing large ones.
"""
from __future__ import annotations

import torch

from .base import WeightPenalty

EPS = 1e-12  # keeps an all-zero tensor at 0/eps = 0 instead of 0/0


# The penalties are evaluated at every training step, on every weight. Autograd would
# record about eight elementwise passes over each weight tensor per step; the
# Functions below write the gradient out and touch each weight three or four times.
class _HoyerSquare(torch.autograd.Function):
    """HS(W) = s1^2 / s2 with s1 = sum |w|, s2 = sum w^2 + eps; dHS/dw = 2 s1/s2 sign(w) - 2 s1^2/s2^2 w."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        s1 = torch.linalg.vector_norm(w, 1)
        s2 = torch.linalg.vector_norm(w, 2).square() + EPS
        ctx.save_for_backward(w, s1, s2)
        return s1.square() / s2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w, s1, s2 = ctx.saved_tensors
        # 2 s1/s2 * (sign(w) - (s1/s2) w): one sign pass, one fused multiply-add, one scale
        return torch.addcmul(torch.sign(w), w, -s1 / s2).mul_(grad * 2 * s1 / s2)


class _GroupHoyerSquare(torch.autograd.Function):
    """GH(W) = (R^2 + C^2) / D with R, C the sums of the output/input group norms, D = ||W||^2 + eps.

    dGH/dw = w * (2R / (D n_out) + 2C / (D n_in) - 2 (R^2 + C^2) / D^2), n_out and n_in
    the norms of the output and input groups w belongs to (each sqrt(. + eps)).
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        out_norms, in_norms = group_norms(w)
        r, c = out_norms.sum(), in_norms.sum()
        d = out_norms.square().sum() - EPS * out_norms.numel() + EPS  # = ||W||^2 + eps without another pass
        ctx.save_for_backward(w, out_norms, in_norms, r, c, d)
        return (r.square() + c.square()) / d

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w, out_norms, in_norms, r, c, d = ctx.saved_tensors
        shrink = 2 * (r.square() + c.square()) / d.square()
        per_out = (2 * r / d / out_norms - shrink).mul_(grad)
        per_in = (2 * c / d / in_norms).mul_(grad)
        return _times_group_sum(w, per_out, per_in)


class _GroupLasso(torch.autograd.Function):
    """GL(W) = sum of the output and input group norms; dGL/dw = w * (1 / n_out + 1 / n_in)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        out_norms, in_norms = group_norms(w)
        ctx.save_for_backward(w, out_norms, in_norms)
        return out_norms.sum() + in_norms.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w, out_norms, in_norms = ctx.saved_tensors
        return _times_group_sum(w, grad / out_norms, grad / in_norms)


def _times_group_sum(w: torch.Tensor, per_out: torch.Tensor, per_in: torch.Tensor) -> torch.Tensor:
    """w * (a_o + b_i), a per output group and b per input group, in one new tensor."""
    tail = (1,) * (w.dim() - 2)
    per = per_out.view(-1, 1, *tail) + per_in.view(1, -1, *tail)
    return per.mul_(w) if per.shape == w.shape else w * per


def hoyer_square(w: torch.Tensor) -> torch.Tensor:
    """HS(W) = (sum |w|)^2 / sum w^2."""
    return _HoyerSquare.apply(w)


def group_norms(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norms of the output groups (Linear rows / conv filters) and of the input groups
    (Linear columns = input neurons / conv input channels)."""
    sq = w.square()
    kernel = tuple(range(2, w.dim()))
    # reduced in place over dims, not over a transposed copy (3x slower on a CPU)
    out_sq = sq.sum(dim=(1, *kernel))
    in_sq = sq.sum(dim=(0, *kernel))
    # sqrt(x + eps): the plain norm's gradient is infinite at an all-zero group
    return (out_sq + EPS).sqrt_(), (in_sq + EPS).sqrt_()


def group_hoyer_square(w: torch.Tensor) -> torch.Tensor:
    """Group-HS over both group sets: (sum_g ||w_g||)^2 / ||W||_F^2, output groups + input groups."""
    return _GroupHoyerSquare.apply(w)


def group_lasso(w: torch.Tensor) -> torch.Tensor:
    """Wen et al. 2016: sum of group L2 norms, over the same two group sets as Group-HS."""
    return _GroupLasso.apply(w)


class Hoyer(WeightPenalty):
    """lam * sum over layers of HS(W_l), then prune small weights and finetune."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return hoyer_square(w)


class GroupHoyer(WeightPenalty):
    """lam * sum over layers of Group-HS(W_l) (+ method.l2 * ||W_l||^2, the paper's structural runs)."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return group_hoyer_square(w)

    def penalty_on(self, weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
        reg = super().penalty_on(weights)
        if self.cfg.l2:
            l2 = self.cfg.l2 * sum(w.pow(2).sum() for w in weights.values())
            reg = l2 if reg is None else reg + l2
        return reg


class GroupLasso(WeightPenalty):
    def term(self, w: torch.Tensor) -> torch.Tensor:
        return group_lasso(w)
