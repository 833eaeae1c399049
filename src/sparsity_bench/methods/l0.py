"""L0 regularization with hard-concrete gates (Louizos, Welling & Kingma, ICLR 2018).

Each prunable layer's weight is reparametrized with torch.nn.utils.parametrize as
theta = theta_tilde * z. The gates z follow the hard-concrete distribution with a
learnable log_alpha per gate; log_alpha lives in the parametrization module, so
the optimizer reaches it through model.parameters() and the checkpoint holds it
in the model's state_dict.

Gates (method.granularity):
  neuron  one gate per Linear input feature (a column of the weight) and one per
          Conv2d output filter; a filter's bias belongs to its group and is gated
          with it (a closed filter emits nothing, not a constant map).
  weight  one gate per weight; biases are not gated.

Which layers (method.layers, shell patterns; by default): with neuron gates, the
prunable layers whose gated units no other layer shares through a residual sum
(metrics/coupling.py): every layer of LeNet and AlexNet, the first conv of each
block of a ResNet or WRN (the paper's WRN placement). A filter of a block's last
conv, the stem or a projection only removes one branch's share of a residual
channel, which stays as long as another branch writes it. With weight gates,
every prunable layer.

BatchNorm: a Conv2d followed by a BatchNorm (that alone reads it) is gated after
the BatchNorm, z * BN(conv(x)), by parametrizing the BatchNorm's scale and shift.
Gates on the conv's weight would be invisible in training: one z per minibatch
scales a channel's batch mean and deviation alike, and BatchNorm divides it out.
A closed gate thus silences the whole unit; its filter reads as zero in eval mode
(ClosedFilters), and pruning masks the filter and the BatchNorm channel.

When gates are random: only inside a forward of the layer in training mode. One
sample is drawn per forward (per minibatch) and shared by a layer's weight and
bias; with method.per_example the gates multiply activations instead (Linear
inputs, Conv2d output channels or the BatchNorm's), one sample per example. Anywhere else (eval
mode, or reading ``layer.weight`` outside a forward, as the per-epoch sparsity
and FLOPs measurements do) the deterministic test-time gate is used, so what is
measured is the model that evaluation sees.

Penalty per layer l (N = training-set size, P_g = P(z_g != 0)):
  (1/N) sum_g P_g * lam_l * |g|  +  0.5 * weight_decay * sum_g P_g * ||theta_tilde_g||^2
  +  0.5 * weight_decay * ||ungated bias||^2
The first term is the expected L0 norm with the paper's lambda = lam / N. The L2
term (method.weight_decay, 0 by default) is the expected weight decay of the gated
weights at the scale of ordinary weight decay; the paper's code writes it as
(1/N) * 0.5 * prior_prec * ||theta||^2 with prior_prec = N * weight_decay in its MLP
and WRN models (its LeNet-5 model omits the factor N, which switches the decay off;
not repeated here). Biases: a gated Conv2d bias is inside its filter's group term,
every other bias gets the plain (always present) L2 term, with a positive sign.
Neither the L0 term nor |g| counts biases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import ConfigError, GateGranularity, PruneConfig
from ..metrics.coupling import Structure, structure_or_none
from ..metrics.flops import output_positions
from ..metrics.sparsity import prunable_layers
from ..pruning import Masks, magnitude_masks, match_layers
from .base import Method

GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0  # stretch interval (gamma, zeta) and temperature
EPS = 1e-6  # u ~ U(EPS, 1 - EPS)
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(1e-2), math.log(1e2)
# sigmoid(a) * (zeta - gamma) + gamma is <= 0 iff a <= log(-gamma / zeta) = log(1/11),
# and >= 1 iff a >= log((1 - gamma) / (zeta - 1)) = log(11).
CLOSED_AT = math.log(-GAMMA / ZETA)
OPEN_AT = math.log((1 - GAMMA) / (ZETA - 1))
LOG_RATIO = BETA * math.log(-GAMMA / ZETA)  # P(z != 0) = sigmoid(log_alpha - LOG_RATIO)
S_LOW, S_HIGH = -GAMMA / (ZETA - GAMMA), (1 - GAMMA) / (ZETA - GAMMA)  # z is clamped for s outside


def prob_nonzero(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)): the expected L0 per gate."""
    return torch.sigmoid(log_alpha - LOG_RATIO)


def deterministic_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    """Test-time gate clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1).

    Exactly 0 at log_alpha <= log(1/11) and exactly 1 at log_alpha >= log(11), also
    where float rounding of the affine map would leave a few ulps on either side.
    """
    z = (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
    return z.masked_fill(log_alpha <= CLOSED_AT, 0.0).masked_fill(log_alpha >= OPEN_AT, 1.0)


def sample_gate(log_alpha: torch.Tensor, shape: torch.Size | tuple[int, ...] | None = None) -> torch.Tensor:
    """A hard-concrete sample, differentiable in log_alpha; ``shape`` (default: log_alpha's) must expand from it.

    u ~ U(eps, 1 - eps); s = sigmoid((log u - log(1 - u) + log_alpha) / beta);
    z = clamp(s * (zeta - gamma) + gamma, 0, 1).
    """
    return _HardConcrete.apply(log_alpha if shape is None else log_alpha.expand(shape))[0]


# The two functions below run on every training step. Each handles all layers at once as
# one autograd node with a hand-written backward, instead of a chain of small ops per
# layer: on a CPU the per-op overhead of those chains rivals the matmuls of a LeNet.
class _HardConcrete(torch.autograd.Function):
    """Independent hard-concrete samples, one tensor per log_alpha tensor given (of its shape)."""

    @staticmethod
    def forward(ctx, *log_alphas: torch.Tensor):
        flat = _flat(log_alphas)
        u = torch.empty_like(flat).uniform_(EPS, 1 - EPS)
        s = torch.logit(u).add_(flat).div_(BETA).sigmoid_()  # (out of place: logit_ is slow on CPU)
        ctx.save_for_backward(s)
        ctx.shapes = [la.shape for la in log_alphas]
        z = (s * (ZETA - GAMMA)).add_(GAMMA).clamp_(0.0, 1.0)
        return tuple(part.view(shape) for part, shape in zip(z.split([math.prod(sh) for sh in ctx.shapes]), ctx.shapes))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        (s,) = ctx.saved_tensors
        g = _flat(grads)
        # dz/dlog_alpha = (zeta - gamma) s (1 - s) / beta where the clamp is inactive, else 0
        d = (1 - s).mul_(s).mul_(g).mul_((s >= S_LOW) & (s <= S_HIGH)).mul_((ZETA - GAMMA) / BETA)
        return tuple(part.view(shape) for part, shape in zip(d.split([math.prod(sh) for sh in ctx.shapes]), ctx.shapes))


class _Penalty(torch.autograd.Function):
    """sum_g P_g (c_g + 0.5 wd (||w_g||^2 + b_g^2)) + 0.5 wd ||ungated biases||^2 over all layers (wd > 0).

    Inputs after (cost0, wd, plan): k log_alphas, k weights, k gated biases (or None),
    k ungated biases (or None). cost0 holds c_g = lam_l |g| / N per gate; plan holds each
    layer's group dims (None: a gate per weight) and gate view onto the weight.
    """

    @staticmethod
    def forward(ctx, cost0: torch.Tensor, wd: float, plan: list, *tensors):
        k = len(plan)
        las, ws, gbs, ubs = tensors[:k], tensors[k : 2 * k], tensors[2 * k : 3 * k], tensors[3 * k :]
        p = (_flat(las) - LOG_RATIO).sigmoid_()
        parts = []
        for w, gb, (dims, _) in zip(ws, gbs, plan):
            sq = w.square() if dims is None else w.square().sum(dims)
            parts.append((sq if gb is None else sq + gb.square()).reshape(-1))
        cost = torch.add(cost0, _flat(parts), alpha=0.5 * wd)
        total = torch.dot(p, cost)
        plain = [b.reshape(-1) for b in ubs if b is not None]
        if plain:
            flat_b = _flat(plain)
            total = total + torch.dot(flat_b, flat_b) * (0.5 * wd)
        ctx.save_for_backward(p, cost, *ws, *gbs, *ubs)
        ctx.wd, ctx.plan, ctx.shapes = wd, plan, [t.shape for t in las]
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p, cost, *rest = ctx.saved_tensors
        k = len(ctx.plan)
        ws, gbs, ubs = rest[:k], rest[k : 2 * k], rest[2 * k :]
        sizes = [math.prod(shape) for shape in ctx.shapes]
        d_la = (1 - p).mul_(p).mul_(cost).mul_(grad)  # dP/dlog_alpha = P (1 - P)
        grad_la = [part.view(shape) for part, shape in zip(d_la.split(sizes), ctx.shapes)]
        grad_w, grad_gb, grad_ub = [None] * k, [None] * k, [None] * k
        scale = p * (grad * ctx.wd)  # d/dw of 0.5 wd P ||w||^2 = wd P w
        for i, (part, w, gb, ub, (_, view)) in enumerate(zip(scale.split(sizes), ws, gbs, ubs, ctx.plan)):
            grad_w[i] = w * part.view(view)
            if gb is not None:
                grad_gb[i] = gb * part
            if ub is not None:
                grad_ub[i] = ub * (grad * ctx.wd)
        return (None, None, None, *grad_la, *grad_w, *grad_gb, *grad_ub)


def _flat(tensors) -> torch.Tensor:
    """The tensors flattened into one vector (no copy for a single 1-d tensor)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors])


class _Draws:
    """Per-minibatch gate samples of every layer, drawn for all layers at once.

    A layer takes its sample when its forward first needs it; when it asks again (its
    next forward), every layer gets a fresh draw. Each sample is used by one forward only.
    """

    def __init__(self) -> None:
        self.gates: list[Gates] = []
        self.samples: list[torch.Tensor | None] = []

    def take(self, i: int) -> torch.Tensor:
        if self.samples[i] is None:
            self.samples = list(_HardConcrete.apply(*[g.log_alpha for g in self.gates]))
        z, self.samples[i] = self.samples[i], None
        return z


class _Now:
    """What a layer's current forward uses; a plain object, as nn.Module.__setattr__ is slow for a hot path."""

    __slots__ = ("in_forward", "sample", "on_activations")

    def __init__(self) -> None:
        self.reset(False)

    def reset(self, in_forward: bool) -> None:
        self.in_forward = in_forward  # gates are random only inside a training-mode forward of the layer
        self.sample: torch.Tensor | None = None  # this forward's draw, shared by weight and bias
        self.on_activations = False  # this forward gates activations, not parameters


class Gates(nn.Module):
    """One layer's log_alpha, and the gate value its weight and bias use right now."""

    def __init__(self, log_alpha: torch.Tensor, per_example: bool, draws: _Draws):
        super().__init__()
        self.log_alpha = nn.Parameter(log_alpha)
        self.per_example = per_example
        self.now = _Now()  # set by the layer's hooks
        self.__dict__["_draws"] = draws  # shared by all layers (a plain reference, not a submodule)
        self.index = len(draws.gates)
        draws.gates.append(self)
        draws.samples.append(None)

    def sampling(self) -> bool:
        return self.training and self.now.in_forward

    def sample(self) -> torch.Tensor:
        """This forward's one draw (per minibatch)."""
        now = self.now
        if now.sample is None:
            now.sample = self._draws.take(self.index)
        return now.sample

    def value(self) -> torch.Tensor | None:
        """The gate to multiply the parameters with; None leaves them ungated (the gates act on activations)."""
        if not self.sampling():
            return deterministic_gate(self.log_alpha)
        if self.per_example or self.now.on_activations:
            return None
        return self.sample()


class GatedWeight(nn.Module):
    """Parametrization theta = theta_tilde * z; owns the layer's Gates."""

    def __init__(self, gates: Gates, view: tuple[int, ...]):
        super().__init__()
        self.gates = gates
        self.view = view

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        z = self.gates.value()
        return w if z is None else w * z.view(self.view)


class GatedBias(nn.Module):
    """Parametrization b = b_tilde * z for a Conv2d bias, with the filter gates of the weight."""

    def __init__(self, gates: Gates):
        super().__init__()
        self.__dict__["_gates"] = gates  # a plain reference: GatedWeight owns (and registers) the gates

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        z = self._gates.value()
        return b if z is None else b * z


class GatedScale(nn.Module):
    """Parametrization gamma = gamma_tilde * z of the BatchNorm after a gated conv; owns the layer's Gates.

    With the BatchNorm's bias gated alike (GatedBias), the block computes z * BN(conv(x)).
    """

    def __init__(self, gates: Gates):
        super().__init__()
        self.gates = gates

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        z = self.gates.value()
        return g if z is None else g * z


class ClosedFilters(nn.Module):
    """Parametrization of a conv weight whose gates sit on the BatchNorm after it.

    The gates multiply the BatchNorm's output, so the conv computes with its own
    weight during training. Everywhere else (eval mode, which the measurements use,
    and the weight left behind by detach) the filters of closed gates read as zero;
    in eval mode that changes no output, as z * BN(.) is 0 on those channels anyway.
    """

    def __init__(self, gates: Gates, view: tuple[int, ...]):
        super().__init__()
        self.__dict__["_gates"] = gates  # a plain reference: GatedScale owns the gates
        self.view = view
        self.bake = False  # set by detach: leave the closed filters at zero

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training and not self.bake:
            return w
        return w * (deterministic_gate(self._gates.log_alpha) != 0).to(w.dtype).view(self.view)


@dataclass
class GatedLayer:
    name: str
    module: nn.Module
    gates: Gates
    view: tuple[int, ...]  # log_alpha -> broadcastable to the weight
    dims: tuple[int, ...] | None  # weight dims a gate spans (None: one gate per weight)
    group_size: int  # weights per gate
    lam: float
    gated_bias: bool
    norm: str | None = None  # the BatchNorm after a conv whose output the gates multiply (None: the weights)
    site: nn.Module | None = None  # the module whose forward uses the gates (the BatchNorm, else the layer)
    handles: list = field(default_factory=list)

    @property
    def log_alpha(self) -> torch.Tensor:
        return self.gates.log_alpha

    @property
    def per_weight(self) -> bool:
        return self.dims is None

    def original(self, attr: str) -> torch.Tensor:
        return getattr(self.module.parametrizations, attr).original


def _hooks(layer: GatedLayer) -> list:
    """Hooks that mark a forward (gates are random only inside one) and gate activations where that is the way.

    A Linear layer's input-feature gates may multiply the input x instead of the weight
    columns: x (z * W)^T = (x * z) W^T. With one sample per minibatch that is done when x
    needs a gradient anyway and is the smaller tensor (cheaper forward and backward);
    per-example samples always act on activations (Linear inputs, Conv2d output channels,
    or the output of the BatchNorm after the conv). The hooks sit on the module whose
    forward uses the gates (layer.site).
    """
    gates, now, per_example = layer.gates, layer.gates.now, layer.gates.per_example
    is_linear = isinstance(layer.module, nn.Linear) and not layer.per_weight
    weight_numel = layer.original("weight").numel()

    def before(module, args):
        now.reset(True)
        if not (is_linear and gates.sampling()):
            return None
        x = args[0]
        if per_example:
            z = sample_gate(gates.log_alpha, (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],))
        elif x.requires_grad and x.numel() <= weight_numel:
            now.on_activations, z = True, gates.sample()
        else:
            return None
        return (x * z,) + tuple(args[1:])

    def after(module, args, out):
        try:
            if per_example and not is_linear and gates.sampling():
                z = sample_gate(gates.log_alpha, (out.shape[0], out.shape[1]))
                return out * z.view(*z.shape, *([1] * (out.dim() - 2)))
            return None
        finally:
            now.reset(False)

    m = layer.site
    return [m.register_forward_pre_hook(before), m.register_forward_hook(after, always_call=True)]


class L0(Method):
    """Louizos et al. 2018: learn which groups of weights to drop through hard-concrete gates."""

    def __init__(self, cfg, n_train: int, input_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__(cfg, n_train, input_shape)
        self.layers: list[GatedLayer] = []
        self._flops_plan: list[tuple] | None = None
        self._structure: Structure | None = None
        self._cost0: torch.Tensor | None = None

    # ------------------------------------------------------------------ attach / detach
    def gated_layers(self, model: nn.Module) -> tuple[list[tuple[str, nn.Module]], Structure | None]:
        """The layers that get gates, in model order, and the model's channel structure (None: not traced).

        method.layers (shell patterns) names them; by default, with neuron gates, every
        prunable layer whose gated units no other layer shares: a Conv2d whose output
        channels are not summed with another layer's, a Linear whose input features are
        not (in a ResNet: the first conv of each block, the L0 paper's WRN placement);
        with weight gates every prunable layer.
        """
        found = prunable_layers(model)
        names = [name for name, _ in found]
        neuron = GateGranularity(self.cfg.granularity) == GateGranularity.neuron
        st = structure_or_none(model, self.input_shape) if neuron else None
        if self.cfg.layers is not None:
            chosen = set(match_layers(self.cfg.layers, names, "method.layers"))
        elif st is not None:
            chosen = {
                name for name, m in found
                if name not in (st.coupled_inputs if isinstance(m, nn.Linear) else st.coupled_outputs)
            }  # fmt: skip
        else:
            chosen = set(names)
        return [(name, m) for name, m in found if name in chosen], st

    def attach(self, model: nn.Module) -> None:
        cfg = self.cfg
        found, st = self.gated_layers(model)
        lams = [cfg.lam] * len(found) if cfg.lam_per_layer is None else list(cfg.lam_per_layer)
        if len(lams) != len(found):
            raise ConfigError(
                f"method.lam_per_layer has {len(lams)} values but the model has {len(found)} prunable layers to gate "
                f"({', '.join(name for name, _ in found)}): give one lambda per layer."
            )
        neuron = GateGranularity(cfg.granularity) == GateGranularity.neuron
        modules = dict(model.named_modules())
        first = st.input_layer if st is not None else found[0][0] if found else None
        draws = _Draws()
        for (name, m), lam in zip(found, lams):
            w = m.weight
            if not neuron:
                shape, view, dims = tuple(w.shape), tuple(w.shape), None
            elif isinstance(m, nn.Linear):
                shape, view, dims = (w.shape[1],), (1, w.shape[1]), (0,)
            else:
                shape, view, dims = (w.shape[0],), (w.shape[0],) + (1,) * (w.dim() - 1), tuple(range(1, w.dim()))
            p = cfg.droprate_init_first if name == first else cfg.droprate_init
            log_alpha = torch.empty(shape, device=w.device, dtype=w.dtype).normal_(math.log(1 - p) - math.log(p), 1e-2)
            gates = Gates(log_alpha, cfg.per_example, draws)
            gates.train(m.training)
            # a conv followed by a BatchNorm is gated after the BatchNorm: z * BN(conv(x)). Gating the
            # conv's weights would be undone by the BatchNorm's normalization in training (one z per
            # minibatch scales a channel's batch mean and deviation alike), hiding the gates from the loss.
            norm = st.norm_after.get(name) if (st is not None and neuron and isinstance(m, nn.Conv2d)) else None
            if norm is not None and not modules[norm].affine:
                norm = None
            gated_bias = neuron and isinstance(m, nn.Conv2d) and m.bias is not None and norm is None
            site = modules[norm] if norm is not None else m
            layer = GatedLayer(name, m, gates, view, dims, w.numel() // log_alpha.numel(), float(lam), gated_bias, norm, site)
            if norm is None:
                parametrize.register_parametrization(m, "weight", GatedWeight(gates, view))
                if gated_bias:
                    parametrize.register_parametrization(m, "bias", GatedBias(gates))
            else:
                parametrize.register_parametrization(site, "weight", GatedScale(gates))
                parametrize.register_parametrization(site, "bias", GatedBias(gates))
                parametrize.register_parametrization(m, "weight", ClosedFilters(gates, view))
            layer.handles = _hooks(layer)
            self.layers.append(layer)
        self._flops_plan = self._cost0 = None
        self._structure = st

    def detach(self, model: nn.Module) -> None:
        """Bake the deterministic gates into the weights (gated biases, BatchNorm scales and shifts) and
        remove every trace of the gates."""
        for layer in self.layers:
            for h in layer.handles:
                h.remove()
            layer.gates.now.reset(False)  # outside a forward the gates are deterministic
            if layer.norm is not None:
                layer.module.parametrizations.weight[0].bake = True
                for attr in ("weight", "bias"):
                    parametrize.remove_parametrizations(layer.site, attr, leave_parametrized=True)
            parametrize.remove_parametrizations(layer.module, "weight", leave_parametrized=True)
            if layer.gated_bias:
                parametrize.remove_parametrizations(layer.module, "bias", leave_parametrized=True)
        self.layers = []

    # ------------------------------------------------------------------ training
    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """(1/N) sum_g P_g lam_l |g| + 0.5 wd sum_g P_g ||theta_tilde_g||^2 + 0.5 wd ||ungated biases||^2."""
        if not self.layers:
            return None
        las = [layer.log_alpha for layer in self.layers]
        if self._cost0 is None or self._cost0.device != las[0].device or self._cost0.dtype != las[0].dtype:
            self._cost0 = torch.cat([
                torch.full((la.numel(),), layer.lam * layer.group_size / self.n_train, device=la.device, dtype=la.dtype)
                for la, layer in zip(las, self.layers)
            ])  # fmt: skip
        cost0 = self._cost0 if self.lam_scale == 1.0 else self._cost0 * self.lam_scale
        if self.cfg.weight_decay == 0:
            return torch.dot(torch.sigmoid(_flat(las) - LOG_RATIO), cost0)
        ws = [layer.original("weight") for layer in self.layers]
        gbs = [layer.original("bias") if layer.gated_bias else None for layer in self.layers]
        ubs = [None if layer.gated_bias else layer.module.bias for layer in self.layers]
        plan = [(layer.dims, layer.view) for layer in self.layers]
        return _Penalty.apply(cost0, float(self.cfg.weight_decay), plan, *las, *ws, *gbs, *ubs)

    @torch.no_grad()
    def step(self, progress: float) -> None:
        """Clamp log_alpha to [log 1e-2, log 1e2] after every optimizer step."""
        if self.layers:
            las = [layer.log_alpha for layer in self.layers]
            torch._foreach_clamp_min_(las, LOG_ALPHA_MIN)
            torch._foreach_clamp_max_(las, LOG_ALPHA_MAX)

    # ------------------------------------------------------------------ pruning
    @torch.no_grad()
    def weight_masks(self, model: nn.Module, prune: PruneConfig) -> Masks:
        """The weights whose deterministic gate is exactly zero are pruned; prune.* plays no part.

        With method.target_sparsity, the weight masks are magnitude masks at that sparsity of
        the gated weights theta_tilde * z (closed gates give exact zeros, which stay pruned),
        under prune.scope. A gated Conv2d bias gets a mask too, and so do the scale and shift
        of a BatchNorm that carries the gates, so a closed filter stays silent through finetuning.
        """
        out: Masks = {}
        for layer in self.layers:
            keep = deterministic_gate(layer.log_alpha) != 0
            weight = layer.original("weight")
            out[f"{layer.name}.weight"] = keep.view(layer.view).expand_as(weight).clone()
            if layer.gated_bias:
                out[f"{layer.name}.bias"] = keep.clone()
            if layer.norm is not None:
                out[f"{layer.norm}.weight"] = keep.clone()
                out[f"{layer.norm}.bias"] = keep.clone()
        if self.cfg.target_sparsity is not None:
            gated = {f"{layer.name}.weight": layer.module.weight for layer in self.layers}  # deterministic gates
            out.update(magnitude_masks(gated, prune, self.cfg.target_sparsity))
        return out

    @torch.no_grad()
    def gate_sparsity(self, soft: bool = False) -> float | None:
        """The fraction of prunable weights whose deterministic gate is exactly zero; soft: the weights'
        mean of 1 - z, which moves as soon as log_alpha does and equals the former once every gate is 0 or 1."""
        if not self.layers:
            return None
        total = sum(layer.original("weight").numel() for layer in self.layers)
        closed = 0.0
        for layer in self.layers:
            z = deterministic_gate(layer.log_alpha)
            closed += float((1 - z).sum() if soft else (z == 0).sum()) * layer.group_size
        return closed / total

    # ------------------------------------------------------------------ logging
    def _plan_flops(self, model: nn.Module) -> list[tuple]:
        """Per prunable layer: (positions, taps, input side, output side), or (positions, "weights", gate layer).

        A side is (gate layer index, units per gate) when gates decide how many of its
        units are open, else (None, unit count). A layer's own neuron gates decide its
        gated side; the other side follows the gates of the one layer on the other end of
        those channels (the conv that alone writes a layer's inputs, the gated Linear that
        alone reads a layer's outputs), found in the model's channel groups.
        """
        positions = output_positions(model, self.input_shape)
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        in_group, out_group = {}, {}
        for g in self._structure.groups if self._structure is not None else []:
            for mem in g.members:
                if mem.role in ("in", "out"):
                    (in_group if mem.role == "in" else out_group).setdefault(mem.layer, g)

        def neuron_gated(name: str, linear: bool) -> bool:
            i = index.get(name)
            return i is not None and not self.layers[i].per_weight and isinstance(self.layers[i].module, nn.Linear) == linear

        modules = dict(model.named_modules())
        plan = []
        for name, m in prunable_layers(model):
            n_out, n_in = m.weight.shape[0], m.weight.shape[1]
            taps, pos = m.weight[0, 0].numel(), positions[name]
            if name in index and self.layers[index[name]].per_weight:
                plan.append((pos, "weights", index[name]))
                continue
            e_in, e_out = (None, n_in), (None, n_out)
            if neuron_gated(name, linear=True):
                e_in = (index[name], 1)
            elif name in in_group and len(in_group[name].writers()) == 1:
                (writer,) = in_group[name].writers()
                if neuron_gated(writer, linear=False):
                    e_in = (index[writer], n_in / modules[writer].weight.shape[0])
            if neuron_gated(name, linear=False):
                e_out = (index[name], 1)
            elif name in out_group and out_group[name].writers() == {name}:
                readers = {mem.layer for mem in out_group[name].members if mem.role == "in"}
                if len(readers) == 1:
                    (reader,) = readers
                    if neuron_gated(reader, linear=True) and modules[reader].weight.shape[1] == n_out:
                        e_out = (index[reader], 1)
            plan.append((pos, taps, e_in, e_out))
        return plan

    @torch.no_grad()
    def expected_flops(self, model: nn.Module) -> float:
        """The paper's expected FLOPs: per prunable layer, expected open inputs x expected open outputs x taps x positions x 2.

        A side's open units are the sum of P(z != 0) of the gates that decide them (see
        _plan_flops), else its unit count. With weight gates: expected non-zero weights x
        positions x 2. Layers without gates count at their (linked) size.
        """
        if self._flops_plan is None:
            self._flops_plan = self._plan_flops(model)
        opened = [float(prob_nonzero(layer.log_alpha).sum()) for layer in self.layers]

        def units(side: tuple) -> float:
            i, n = side
            return n if i is None else opened[i] * n

        total = 0.0
        for entry in self._flops_plan:
            if entry[1] == "weights":
                total += 2 * entry[0] * opened[entry[2]]
            else:
                pos, taps, e_in, e_out = entry
                total += 2 * pos * taps * units(e_in) * units(e_out)
        return total

    @torch.no_grad()
    def scalars(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        expected_l0 = 0.0
        for layer in self.layers:
            expected_l0 += float(prob_nonzero(layer.log_alpha).sum()) * layer.group_size
            out[f"closed/{layer.name}"] = float((deterministic_gate(layer.log_alpha) == 0).float().mean())
        out["expected_l0"] = expected_l0
        out["expected_flops"] = self.expected_flops(model)
        return out

    @torch.no_grad()
    def histograms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for layer in self.layers:
            out[f"log_alpha/{layer.name}"] = layer.log_alpha.detach()
            out[f"gate/{layer.name}"] = deterministic_gate(layer.log_alpha)
        return out

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {}  # log_alpha is a model parameter: the model's state_dict carries it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
