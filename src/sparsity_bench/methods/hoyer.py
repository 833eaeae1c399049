"""DeepHoyer (Yang, Wen, Li, ICLR 2020) and the group-lasso baseline.

Hoyer-Square and Group-HS are ratios of an L1-type norm to the L2 norm, so they
are scale-invariant: shrinking every weight leaves them unchanged, and the
gradient pushes small weights (or groups) to zero while sparing large ones.
"""
from __future__ import annotations

import torch
from torch import nn

from ..metrics.sparsity import prunable_weights
from .base import WeightPenalty

EPS = 1e-12  # keeps an all-zero tensor at 0/eps = 0 instead of 0/0


def hoyer_square(w: torch.Tensor) -> torch.Tensor:
    """HS(W) = (sum |w|)^2 / sum w^2."""
    return w.abs().sum().pow(2) / (w.pow(2).sum() + EPS)


def group_norms(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norms of the output groups (Linear rows / conv filters) and of the input groups
    (Linear columns = input neurons / conv input channels)."""
    sq = w.pow(2)
    out_sq = sq.flatten(1).sum(dim=1)
    in_sq = sq.transpose(0, 1).flatten(1).sum(dim=1)
    # sqrt(x + eps): the plain norm's gradient is infinite at an all-zero group
    return (out_sq + EPS).sqrt(), (in_sq + EPS).sqrt()


def group_hoyer_square(w: torch.Tensor) -> torch.Tensor:
    """Group-HS over both group sets: (sum_g ||w_g||)^2 / ||W||_F^2, output groups + input groups."""
    denom = w.pow(2).sum() + EPS
    out_norms, in_norms = group_norms(w)
    return (out_norms.sum().pow(2) + in_norms.sum().pow(2)) / denom


def group_lasso(w: torch.Tensor) -> torch.Tensor:
    """Wen et al. 2016: sum of group L2 norms, over the same two group sets as Group-HS."""
    out_norms, in_norms = group_norms(w)
    return out_norms.sum() + in_norms.sum()


class Hoyer(WeightPenalty):
    """lam * sum over layers of HS(W_l), then prune small weights and finetune."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return hoyer_square(w)


class GroupHoyer(WeightPenalty):
    """lam * sum over layers of Group-HS(W_l) (+ method.l2 * ||W_l||^2, the paper's structural runs)."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return group_hoyer_square(w)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        reg = super().penalty(model)
        if self.cfg.l2:
            l2 = self.cfg.l2 * sum(w.pow(2).sum() for w in prunable_weights(model).values())
            reg = l2 if reg is None else reg + l2
        return reg


class GroupLasso(WeightPenalty):
    def term(self, w: torch.Tensor) -> torch.Tensor:
        return group_lasso(w)
