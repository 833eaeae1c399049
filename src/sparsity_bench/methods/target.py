"""method.target_sparsity for the regularizers: lam is steered during training toward the asked sparsity.

For l1, l2, hoyer, group_hoyer, group_lasso and l0 the sparsity a run reaches follows
from lam, so comparing methods "at 95% sparsity" would need a lam search per method.
With method.target_sparsity=s, TargetSparsity wraps the method and, during the
training phase, moves lam (starting from method.lam) until the regularizer itself has
made the model about s sparse. After training, the masks are magnitude masks at
exactly s (prune.scope), so the run lands on s even where the regularizer stopped a
little short or long; the sparsity the regularizer reached on its own, before that
cut, is reported next to it (results.json "method").

What is measured (the signal), every 1/200 of the training phase:
  - l0: how far the deterministic gates z are closed, 1 - z averaged over the weights
    they gate. It equals the fraction of weights whose gate is exactly 0 (l0's own
    prune rule, reported before the cut) once every gate is 0 or 1, and unlike that
    fraction it moves as soon as log_alpha does: a gate reaches exactly 0 only after
    log_alpha has gone from its start (0, or 1.4 for the first layer) below -2.4, at
    about the learning rate per Adam step, thousands of steps at lr 1e-3, and a
    controller fed by closed gates alone winds lam up meanwhile.
  - the weight penalties: the fraction of prunable weights below the run's prune
    threshold, |w| < prune.threshold * std(W) (rule=std; rule=abs: |w| < prune.threshold),
    with std(W) frozen at the start of training. The std rule on the current weights
    cannot steer: it is scale-invariant, so a too strong penalty that shrinks every
    weight of a layer into the optimizer's noise reads as dense again, and a
    controller fed by it raises lam further. (Seen on the synthetic set: L1 at
    lam 1e-2 leaves a dead network whose std-rule sparsity is 0.38.) The frozen
    threshold keeps the signal monotone in lam. For rule=sparsity and rule=keep, which
    do not read what the regularizer did, the std rule with prune.threshold is used.
    The honest report before the cut uses the run's rule on the final weights.

The control law is proportional-integral, on log lam, for these reasons:
  - The error is log(density / asked density), density = 1 - sparsity. Going from
    95% to 99% sparse is then as large an error as going from 95% to 75%, and a
    multiplicative change of lam answers either (lam spans decades between methods).
  - log lam = log method.lam + gain * integral(error d progress) + error, with progress
    the share of the training phase done. How fast the weights follow lam depends on
    the learning rate and its schedule, which are laid out per phase; the same gain
    (method.target_gain, 12) settles 240-step synthetic runs and 2750-step MNIST runs.
  - Warm-up: the asked density starts at the first measurement and moves to the target
    linearly in log density over the first method.target_ramp (0.3) of the phase, so
    the model sparsifies gradually (as gradual magnitude pruning does) and the
    controller tracks a moving setpoint instead of answering a large initial error
    with a large lam that the weights' lag turns into overshoot.
  - In the proportional term, errors on the too-sparse side count 3 times (BRAKE):
    weights a regularizer has driven to zero seldom come back (their gradient is small
    once the loss is low, and dead ReLU units get none), so overshooting is costly and
    mostly permanent, while falling short is made up later. (Braking the integral too
    left l1 well short after a start 10x too strong: lam wound down too far.)
  - The integral holds while the measured speed of sparsification (smoothed over 2%
    of the phase) would close the error within a quarter of the phase that is left.
    With Adam a parameter moves about lr per step at most, so once lam dominates a
    weight's (or a gate's) gradient a larger lam no longer speeds it up; integrating
    on would only wind lam up until the weights arrive, and then overshoot. (l0 on
    MNIST for 15 epochs, fed by closed gates and integrating throughout, wound lam up
    and the network died; with the signal above and this hold it ended at 95.4% with
    lam 22 times method.lam.)
  - lam stays within a factor 1e4 of method.lam; the integral stops growing at that
    bound (back-calculation). A target the regularizer cannot reach in the time given
    (l0 in a few epochs) ends with lam at the bound and a warning: the magnitude cut
    then makes the sparsity, and the result says so.

Shape: a wrapper around the method, not a mixin. A regularizer only exposes
``lam_scale`` (the factor its penalty applies to lam; L0 to every layer's lam) and,
for l0, ``gate_sparsity``; measuring, control, masks at the target and the report
live here, and the training loop sees one more Method. none, magnitude and td are
not wrapped: they have no lam (td's knob is method.gamma). With method.plus the lam
steered is the added penalty's (inner.steered()), and the signal is read on the weights
as evaluation computes them, so the base method's closed L0 gates count as zeros.

The controller's state is part of the method's state_dict, so a resumed run continues
with the same lam. TensorBoard gets method/lam, method/steered_sparsity (the signal)
and method/setpoint_sparsity once per epoch.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch
from torch import nn

from ..config import PruneConfig, PruneRule
from ..metrics.sparsity import evaluating, prunable_weights
from ..pruning import Masks, magnitude_masks
from .base import Method, Wrapped

log = logging.getLogger("sparsity_bench")

MEASUREMENTS = 200  # per training phase, at most one per optimizer step
PROPORTIONAL = 1.0  # log lam per unit of error, on top of the integral term
BRAKE = 3.0  # weight of errors on the too-sparse side
MAX_FACTOR = 1e4  # lam stays within [method.lam / 1e4, method.lam * 1e4]
RATE_SMOOTHING = 0.02  # share of the phase over which the speed of sparsification is averaged
CLOSE_WITHIN = 0.25  # the integral holds while the error would close within this share of the phase left
FAR = 0.05  # warn when the regularizer alone ends further than this from the target


def measuring_rule(prune: PruneConfig) -> PruneConfig:
    """The run's prune rule where it reads the weights (std, abs); else the std rule at prune.threshold."""
    if prune.rule in (PruneRule.std, PruneRule.abs):
        return prune
    return PruneConfig(rule=PruneRule.std, threshold=prune.threshold)


@torch.no_grad()
def rule_sparsity(model: nn.Module, rule: PruneConfig) -> float:
    """The fraction of prunable weights that `rule` would remove now."""
    weights = prunable_weights(model)
    kept = sum(int(m.sum()) for m in magnitude_masks(weights, rule).values())
    return 1.0 - kept / sum(w.numel() for w in weights.values())


@torch.no_grad()
def frozen_thresholds(model: nn.Module, rule: PruneConfig) -> dict[str, float]:
    """Per prunable weight, the threshold of `rule` (std or abs) on the weights as they are now."""
    weights = prunable_weights(model)
    if rule.rule == PruneRule.abs:
        return {k: float(rule.threshold) for k in weights}
    return {k: float(rule.threshold * w.std()) for k, w in weights.items()}


@torch.no_grad()
def fraction_below(model: nn.Module, thresholds: dict[str, float]) -> float:
    """The fraction of prunable weights with |w| below their threshold."""
    weights = prunable_weights(model)
    small = sum(int((w.abs() < thresholds[k]).sum()) for k, w in weights.items())
    return small / sum(w.numel() for w in weights.values())


def braked(error: float) -> float:
    return error * BRAKE if error < 0 else error


class LamController:
    """Proportional-integral control of log(lam / method.lam) from measured sparsities (see the module doc)."""

    def __init__(self, target: float, gain: float, ramp: float):
        self.target_log_density = math.log(1.0 - target)
        self.gain = gain
        self.ramp = ramp
        self.steps = 0  # optimizer steps seen
        self.last = 0.0  # progress at the last measurement
        self.start_log_density: float | None = None  # where the setpoint ramp starts
        self.integral = 0.0
        self.log_scale = 0.0  # log(lam / method.lam)
        self.measured: float | None = None  # the last measured sparsity
        self.last_log_density: float | None = None
        self.rate = 0.0  # smoothed speed of sparsification, in log density per phase

    def setpoint(self, progress: float) -> float:
        """The log density asked for at `progress`."""
        if self.start_log_density is None or progress >= self.ramp:
            return self.target_log_density
        done = progress / self.ramp
        return self.start_log_density + done * (self.target_log_density - self.start_log_density)

    def step(self, progress: float, measure: Callable[[], tuple[float, int]]) -> bool:
        """After an optimizer step: measure (sparsity, number of weights) when due, and move lam. True when measured."""
        self.steps += 1
        if self.steps > 1 and math.floor(progress * MEASUREMENTS) == math.floor(self.last * MEASUREMENTS):
            return False
        sparsity, n = measure()
        self.measured = sparsity
        log_density = math.log(max(1.0 - sparsity, 1.0 / n))  # all pruned: as if one weight were left
        if self.start_log_density is None:
            self.start_log_density = max(log_density, self.target_log_density)
        error = log_density - self.setpoint(progress)
        dp = progress - self.last
        if self.last_log_density is not None and dp > 0:
            rate = (self.last_log_density - log_density) / dp  # > 0 while sparsifying, in log density per phase
            self.rate += min(1.0, dp / RATE_SMOOTHING) * (rate - self.rate)
        self.last_log_density = log_density
        # Integrate only while the weights are not already moving fast enough to close the error
        # within a quarter of the phase that is left (see the module doc: l0's gates).
        closing = self.rate * error > 0 and abs(self.rate) * (1.0 - progress) * CLOSE_WITHIN >= abs(error)
        if not closing:
            self.integral += error * dp
        self.last = progress
        raw = self.gain * self.integral + PROPORTIONAL * braked(error)
        bound = math.log(MAX_FACTOR)
        self.log_scale = min(max(raw, -bound), bound)
        if self.log_scale != raw and self.gain > 0:  # at the bound: the integral stops there
            self.integral = (self.log_scale - PROPORTIONAL * braked(error)) / self.gain
        return True

    def state_dict(self) -> dict[str, Any]:
        keys = ("steps", "last", "start_log_density", "integral", "log_scale", "measured", "last_log_density", "rate")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class TargetSparsity(Wrapped):
    """A regularizer (``inner``) whose lam is steered toward method.target_sparsity; the rest is the inner method's."""

    def __init__(self, inner: Method, prune: PruneConfig):
        super().__init__(inner)
        self.regularizer = inner.steered()  # whose lam_scale is steered: inner, or the penalty method.plus adds
        self.rule = measuring_rule(prune)
        self.controller = LamController(self.cfg.target_sparsity, self.cfg.target_gain, self.cfg.target_ramp)
        self.model: nn.Module | None = None  # the model attached to, measured after each step
        self.n_weights = 0  # its prunable weights
        self.thresholds: dict[str, float] | None = None  # the frozen prune thresholds (weight penalties)
        self.before_cut: float | None = None  # the rule's sparsity of the trained model, before the cut

    # ------------------------------------------------------------------ the Method interface
    def attach(self, model: nn.Module) -> None:
        self.inner.attach(model)
        self.model = model
        self.n_weights = sum(w.numel() for w in prunable_weights(model).values())
        if self.thresholds is None:  # a resumed run keeps the ones of its start
            with evaluating(model):
                self.thresholds = frozen_thresholds(model, self.rule)

    def step(self, progress: float) -> None:
        self.inner.step(progress)
        if self.model is not None and self.controller.step(progress, self._measure):
            self.regularizer.lam_scale = math.exp(self.controller.log_scale)

    def masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        before = self.regularizer.gate_sparsity()  # l0: closed gates; else the run's rule on the weights
        if before is None:
            with evaluating(model):
                before = rule_sparsity(model, self.rule)
        self.before_cut = before
        log.info(
            "method.target_sparsity: lam steered from %.4g to %.4g; the regularizer alone reached %.2f%% sparsity, "
            "magnitude pruning takes it to %.2f%%",
            self.regularizer.cfg.start_lam(), self.lam(), 100 * self.before_cut, 100 * self.cfg.target_sparsity,
        )  # fmt: skip
        if abs(self.before_cut - self.cfg.target_sparsity) > FAR:
            at_bound = abs(self.controller.log_scale) >= math.log(MAX_FACTOR) - 1e-9
            key = "method.plus_lam" if self.regularizer is not self.inner else self.cfg.start_lam_key()
            bound = f" with lam at its limit (1e4 times or 1e-4 times {key})" if at_bound else ""
            log.warning(
                "the regularizer alone stopped %.1f points from method.target_sparsity%s: the magnitude cut made up "
                "the difference; more training epochs (l0 gates close slowly) or a %s nearer the mark let the "
                "regularizer get there itself",
                100 * abs(self.before_cut - self.cfg.target_sparsity), bound, key,
            )  # fmt: skip
        return self.inner.masks(model, prune)

    def detach(self, model: nn.Module) -> None:
        self.inner.detach(model)
        self.model = None

    def scalars(self, model: nn.Module) -> dict[str, float]:
        out = dict(self.inner.scalars(model))
        out["lam"] = self.lam()
        if self.controller.measured is not None:
            out["steered_sparsity"] = self.controller.measured
            out["setpoint_sparsity"] = 1.0 - math.exp(self.controller.setpoint(self.controller.last))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(), "controller": self.controller.state_dict(),
            "thresholds": self.thresholds, "before_cut": self.before_cut,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.controller.load_state_dict(state["controller"])
        self.regularizer.lam_scale = math.exp(self.controller.log_scale)
        self.thresholds, self.before_cut = state["thresholds"], state["before_cut"]

    def report(self) -> dict[str, Any]:
        out = {
            **self.inner.report(),
            "target_sparsity": self.cfg.target_sparsity,
            "lam_start": self.regularizer.cfg.start_lam(),
            "lam_final": self.lam(),
            "sparsity_before_cut": self.before_cut,  # the run's prune rule (l0: closed gates) on the trained model
            "steered_sparsity": self.controller.measured,  # the last value the controller saw
        }
        per_layer = getattr(self.regularizer.cfg, "lam_per_layer", None)
        if per_layer is not None:
            out["lam_per_layer_final"] = [lam * self.regularizer.lam_scale for lam in per_layer]
        return out

    # ------------------------------------------------------------------ helpers
    def lam(self) -> float:
        """The lam in force now (L0-sep: the largest per-layer lam; with method.plus: plus_lam's)."""
        return self.regularizer.cfg.start_lam() * self.regularizer.lam_scale

    def _measure(self) -> tuple[float, int]:
        gates = self.regularizer.gate_sparsity(soft=True)
        if gates is not None:
            return gates, self.n_weights
        with evaluating(self.model):
            sparsity = fraction_below(self.model, self.thresholds)
        return sparsity, self.n_weights
