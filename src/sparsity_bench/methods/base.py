"""The one interface every sparsity method implements. The training loop knows only this."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import MethodConfig, PruneConfig
from ..metrics.sparsity import prunable_weights
from ..pruning import Masks, magnitude_masks, norm_masks


class Method:
    """A sparsity method: a regularizer and/or a way to reparametrize weights, plus a mask rule.

    The defaults describe "train dense, prune by magnitude": no reparametrization,
    no penalty, masks from the run's prune rule (or method.target_sparsity).
    """

    def __init__(self, cfg: MethodConfig, n_train: int, input_shape: tuple[int, ...] = (1, 28, 28)):
        self.cfg = cfg
        self.n_train = n_train  # training-set size: some penalties are scaled by 1/N
        self.input_shape = input_shape  # one example's shape, for FLOPs-aware methods
        # Multiplies method.lam (L0: every layer's lam) in the penalty. It stays 1 unless
        # method.target_sparsity steers lam (methods/target.py).
        self.lam_scale = 1.0

    def attach(self, model: nn.Module) -> None:
        """Wrap the model's layers where the method needs it (gates, masking)."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """The regularizer added to the batch loss, or None when there is none."""
        return None

    def step(self, progress: float) -> None:
        """Called after every optimizer step; progress in [0, 1] through the training phase."""

    def masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        """Which weights survive pruning (True = kept): weight_masks, plus the BatchNorm
        channels of the conv filters they remove (see pruning.norm_masks)."""
        masks = self.weight_masks(model, prune)
        return {**masks, **norm_masks(model, masks, self.input_shape)}

    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        """Which weights of the prunable layers survive; by default the run's prune rule (or method.target_sparsity)."""
        return magnitude_masks(prunable_weights(model), prune, self.cfg.target_sparsity)

    def steered(self) -> "Method":
        """The regularizer whose lam method.target_sparsity steers (its lam_scale, gate_sparsity and
        cfg.start_lam): the method itself, or the penalty method.plus adds."""
        return self

    def gate_sparsity(self, soft: bool = False) -> float | None:
        """The fraction of prunable weights whose gates are closed now (soft: how far they are closed on
        average, gates being in [0, 1]); None for a method without gates."""
        return None

    def detach(self, model: nn.Module) -> None:
        """Undo attach, leaving a plain model whose weights are what the method trained."""

    def scalars(self, model: nn.Module) -> dict[str, float]:
        """Method-specific values for TensorBoard (under method/), once per epoch."""
        return {}

    def histograms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Method-specific distributions for TensorBoard (e.g. gates), once per epoch."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def report(self) -> dict[str, Any]:
        """What results.json records about the method (under "method") once the run is done."""
        return {}


class WeightPenalty(Method):
    """lam * sum over prunable weights of f(W): the family of L1, L2 and friends."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return self.penalty_on(prunable_weights(model))

    def penalty_on(self, weights: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The penalty of these weights ({"<layer>.weight": tensor}); None when lam is 0."""
        if self.cfg.lam == 0:
            return None
        return self.cfg.lam * self.lam_scale * sum(self.term(w) for w in weights.values())


class Wrapped(Method):
    """A method around another (``inner``): every call goes to inner unless the wrapper overrides it.

    method.plus (combined.PlusPenalty) and method.target_sparsity (target.TargetSparsity) are such
    wrappers; each overrides only the calls it changes.
    """

    def __init__(self, inner: Method):
        super().__init__(inner.cfg, inner.n_train, inner.input_shape)
        self.inner = inner

    def attach(self, model: nn.Module) -> None:
        self.inner.attach(model)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return self.inner.penalty(model)

    def step(self, progress: float) -> None:
        self.inner.step(progress)

    # masks() is Method's: the wrapper's weight_masks plus the BatchNorm channels they remove
    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        return self.inner.weight_masks(model, prune)

    def steered(self) -> Method:
        return self.inner.steered()

    def gate_sparsity(self, soft: bool = False) -> float | None:
        return self.inner.gate_sparsity(soft)

    def detach(self, model: nn.Module) -> None:
        self.inner.detach(model)

    def scalars(self, model: nn.Module) -> dict[str, float]:
        return self.inner.scalars(model)

    def histograms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.inner.histograms(model)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def report(self) -> dict[str, Any]:
        return self.inner.report()
