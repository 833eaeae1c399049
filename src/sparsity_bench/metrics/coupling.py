"""Which channels of a model belong together, from torch-pruning's dependency graph.

A *channel group* is a set of channels that can only be removed together: the
layers that write them (Conv output filters, Linear outputs) and the layers that
read them (Conv input channels; Linear input features, which after a flatten are
one block of features per channel), joined through BatchNorms, activations,
pooling, reshapes and residual sums. torch-pruning finds the groups by tracing
autograd on an example input. In a ResNet, the channels of the residual stream
form one group per stage: the stem (or the stage's projection) and every block's
last conv write them; every block's first conv and the classifier read them.

One rule decides which channels are dead, shared by the FLOPs count
(flops.live_units) and the physical slimmer (slim.py), so the two agree:

- nobody reads it: every reader's weights for it are zero (over the reader's live outputs); or
- it carries nothing: every writer's weights (over its live inputs) and bias are zero
  for it, and every other op of the group maps zero to zero (a BatchNorm only when
  BN(0) = beta - gamma * mean / std is 0 on that channel).

A channel of a residual sum is therefore dead only when every branch agrees. A
group holding an op the rule does not understand (grouped convs, LayerNorm,
attention, unknown element-wise ops such as a bare channel padding) is *opaque*:
all its channels stay. Conservative, never wrong.

Routing modules (``is_router``), such as the zero-padding shortcut of a ResNet with
shortcut A, copy input channels to output channels and emit zero channels. They
end one group and start the next like a layer: an input is read when a live output
copies it, an output carries something when it copies a live input. torch-pruning
removes their channels through the modules' own routing methods.

The same graph gives facts about layers that methods use without knowing models
by name (``Structure``): which layers write or read channels shared with another
writer (a residual sum), and which BatchNorm alone reads a conv's output.
"""
from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .sparsity import prunable_layers

log = logging.getLogger("sparsity_bench")

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Element-wise ops (autograd node names, lower case, without "backward") that act
# on each channel separately and map 0 to 0. Anything else in a group makes it opaque.
ZERO_PRESERVING = (
    "relu", "relu6", "hardtanh", "leakyrelu", "gelu", "silu", "hardswish", "mish", "elu", "tanh",
    "maxpool", "avgpool", "adaptiveavgpool", "adaptivemaxpool", "upsample",
    "add", "sub", "mul", "div", "neg", "mean", "sum",  # reductions: torch-pruning only couples them per channel
    "t", "transpose", "permute", "view", "unsafeview", "reshape", "alias", "expand", "squeeze", "unsqueeze",
    "clone", "flatten", "tocopy", "cat", "split", "splitwithsizes", "slice", "select", "nativedropout",
)  # fmt: skip


def is_plain_layer(m: nn.Module) -> bool:
    """A Conv/Linear layer whose channels the rule understands (no grouped convs)."""
    return isinstance(m, _LAYERS) and (isinstance(m, nn.Linear) or m.groups == 1)


def op_name(module: nn.Module) -> str:
    """'relu' for torch-pruning's _ElementWiseOp(ReluBackward0), 'maxpool' for MaxPool2DWithIndicesBackward0."""
    grad_fn = getattr(module, "_grad_fn", None)  # the autograd node, or its name
    name = grad_fn if isinstance(grad_fn, str) else grad_fn.name() if grad_fn is not None else repr(module)
    name = name.split("(")[-1].rstrip(")").lower()
    name = name.rsplit("::", 1)[-1].replace("backward", "").rstrip("0123456789")
    for part in ("2d", "3d", "1d", "withindices"):
        name = name.replace(part, "")
    return name


def is_router(m: nn.Module) -> bool:
    """A module that copies input channels to output channels (or emits zero channels), telling
    which through the channel-routing methods: channel_sources(), keep_outputs(), keep_inputs(),
    in_channels, out_channels. E.g. the zero-padding shortcut of a ResNet with shortcut A."""
    return callable(getattr(m, "channel_sources", None))


def _router_pruner():
    """torch-pruning's pruner for routing modules: they end one channel group and start another."""
    import torch_pruning as tp

    class RouterPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs):
            drop = set(idxs)
            layer.keep_outputs([o for o in range(layer.out_channels) if o not in drop])
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs):
            drop = set(idxs)
            layer.keep_inputs([i for i in range(layer.in_channels) if i not in drop])
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.out_channels

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.in_channels

    return RouterPruner()


def build_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's DependencyGraph of `model` (whose parameters must require grad), traced on `example`."""
    import torch_pruning as tp

    routers = {type(m) for m in model.modules() if is_router(m)}
    pruner = _router_pruner() if routers else None
    # two examples, not one: with a batch of 1 some Linear layers trace as view + addmm, which
    # torch-pruning does not tie to the module (the group then looks opaque and nothing is removed)
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example[:2], verbose=False, customized_pruners={t: pruner for t in routers} or None
        )


# ---------------------------------------------------------------- groups as plain data
@dataclass
class Member:
    """One layer's share of a group: its channel (or feature) indices and the group channel of each."""

    layer: str  # module name
    role: str  # "out": writes the channels, "in": reads them, "norm": a BatchNorm on them,
    # "route_out" / "route_in": a routing module (is_router) writes / reads them
    idxs: torch.Tensor  # the module's channel indices (a Linear reading a flatten: feature indices)
    roots: torch.Tensor  # for each index, the group channel it belongs to


@dataclass
class Group:
    size: int  # channels of the group
    members: list[Member] = field(default_factory=list)
    opaque: bool = False  # an op the rule does not understand: every channel stays
    output: bool = False  # the model's output channels: every channel stays

    @property
    def fixed(self) -> bool:
        return self.opaque or self.output

    def writers(self) -> set[str]:
        return {m.layer for m in self.members if m.role in ("out", "route_out")}


def to_group(dg, group, names: dict[nn.Module, str], size: int, output_layers: Sequence[nn.Module] = ()) -> Group:
    """A torch-pruning group as plain data (module names and index tensors)."""
    import torch_pruning as tp

    ops = tp.ops.OPTYPE
    out = Group(size=size)
    for item in group:
        dep = item.dep
        mod, fn, kind = dep.target.module, dep.handler, dep.target.type
        idxs = torch.as_tensor(list(item.idxs), dtype=torch.long)
        roots = torch.as_tensor(list(item.root_idxs), dtype=torch.long)
        if is_plain_layer(mod):
            if dg.is_out_channel_pruning_fn(fn):
                role, extent = "out", mod.weight.shape[0]
                out.output |= mod in output_layers
            elif dg.is_in_channel_pruning_fn(fn):
                role, extent = "in", mod.weight.shape[1]
            else:
                out.opaque = True
                continue
        elif kind == ops.CUSTOMIZED and is_router(mod):
            out_side = dg.is_out_channel_pruning_fn(fn)
            role, extent = ("route_out", mod.out_channels) if out_side else ("route_in", mod.in_channels)
        elif kind == ops.BN and isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.running_mean is None:
                out.opaque = True  # batch statistics at eval time: the channel's value depends on the batch
                continue
            role, extent = "norm", mod.num_features
        elif kind == ops.ELEMENTWISE:
            out.opaque |= op_name(mod) not in ZERO_PRESERVING
            continue
        elif kind in (ops.RESHAPE, ops.CONCAT, ops.SPLIT, ops.SLICE, ops.UNBIND, ops.EXPAND):
            continue  # index plumbing: torch-pruning maps the channel indices through them
        elif kind == ops.OUTPUT:
            out.output = True
            continue
        else:  # LayerNorm, attention, depthwise/grouped convs, unwrapped parameters...
            out.opaque = True
            continue
        if len(idxs) and (int(idxs.max()) >= extent or int(roots.max()) >= size):
            out.opaque = True  # torch-pruning misread an op on the way (e.g. a channel padding)
            continue
        out.members.append(Member(names[mod], role, idxs, roots))
    return out


# ---------------------------------------------------------------- the rule
@dataclass
class Channels:
    """Per group channel: who reads it, who writes it, what the path does to zero."""

    reads: torch.Tensor  # some reader has a non-zero weight for it (into a live output)
    weights: torch.Tensor  # some writer has a non-zero weight for it (from a live input)
    bias: torch.Tensor  # some writer has a non-zero bias for it
    keeps_zero: torch.Tensor  # every BatchNorm of the group maps zero to zero on it
    fixed: bool  # opaque or the model's output: every channel stays

    def dead(self) -> torch.Tensor:
        if self.fixed:
            return torch.zeros_like(self.reads)
        return ~self.reads | (~self.weights & ~self.bias & self.keeps_zero)

    def constant(self) -> torch.Tensor:
        """Read, but written by biases only: an input-independent value (see slim's folding)."""
        if self.fixed:
            return torch.zeros_like(self.reads)
        return self.reads & ~self.weights & self.bias


def _any_by_root(roots: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Per group channel: is any of the values mapped to it true (several indices can share one)."""
    return torch.zeros(n, device=values.device).index_add_(0, roots.to(values.device), values.float()) > 0


def at_zero(bn: nn.Module) -> torch.Tensor:
    """BN(0) per channel in eval mode: beta - gamma * mean / sqrt(var + eps)."""
    value = -bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        value = value * bn.weight.detach() + bn.bias.detach()
    return value


def weight_view(m: nn.Module) -> torch.Tensor:
    """[out, in, taps] view of a layer's weight (taps = 1 for Linear)."""
    w = m.weight.detach()
    return w.reshape(w.shape[0], w.shape[1], -1)


def channel_state(
    group: Group, modules: dict[str, nn.Module],
    live_in: dict[str, torch.Tensor] | None = None, live_out: dict[str, torch.Tensor] | None = None,
) -> Channels:  # fmt: skip
    """The rule's inputs for every channel of a group, from the current weights.

    live_in / live_out (per layer name, bool per input feature / output unit): only
    weights between live units count; None counts every weight.
    """
    n = group.size
    device = next((p.device for m in group.members for p in modules[m.layer].parameters(recurse=False)), None)
    z = lambda: torch.zeros(n, dtype=torch.bool, device=device)  # noqa: E731
    ch = Channels(reads=z(), weights=z(), bias=z(), keeps_zero=~z(), fixed=group.fixed)
    if group.fixed:
        return ch
    for m in group.members:
        mod = modules[m.layer]
        if m.role == "norm":
            ch.keeps_zero &= ~_any_by_root(m.roots, at_zero(mod)[m.idxs].ne(0), n)
            continue
        if m.role in ("route_out", "route_in"):
            src = mod.channel_sources()
            if m.role == "route_out":  # an output carries something when it copies a live input
                carries = src >= 0
                if live_in is not None and m.layer in live_in:
                    carries &= live_in[m.layer].cpu()[src.clamp_min(0)]
                ch.weights |= _any_by_root(m.roots, carries[m.idxs].to(z().device), n)
            else:  # an input is read when a live output copies it
                live = live_out[m.layer].cpu() if live_out is not None and m.layer in live_out else torch.ones_like(src, dtype=torch.bool)
                read = torch.zeros(mod.in_channels, dtype=torch.bool)
                read[src[live & (src >= 0)]] = True
                ch.reads |= _any_by_root(m.roots, read[m.idxs].to(z().device), n)
            continue
        nz = weight_view(mod).ne(0)  # [out, in, taps]
        if m.role == "out":
            if live_in is not None and m.layer in live_in:
                nz = nz[:, live_in[m.layer]]
            ch.weights |= _any_by_root(m.roots, nz[m.idxs].flatten(1).any(dim=1), n)
            if mod.bias is not None:
                ch.bias |= _any_by_root(m.roots, mod.bias.detach()[m.idxs].ne(0), n)
        else:
            if live_out is not None and m.layer in live_out:
                nz = nz[live_out[m.layer]]
            ch.reads |= _any_by_root(m.roots, nz[:, m.idxs].transpose(0, 1).flatten(1).any(dim=1), n)
    return ch


# ---------------------------------------------------------------- the structure of a model
@dataclass
class Structure:
    """The channel groups of a model and the layer facts that follow from them."""

    groups: list[Group]
    input_layer: str | None  # the prunable layer that reads the model's input directly (its unread inputs can go)
    output_layers: tuple[str, ...]
    norm_after: dict[str, str]  # conv name -> name of the BatchNorm that alone reads its output

    @property
    def coupled_outputs(self) -> set[str]:
        """Layers whose output channels another layer also writes (a residual sum)."""
        return {name for g in self.groups if len(g.writers()) > 1 for name in g.writers()}

    @property
    def coupled_inputs(self) -> set[str]:
        """Layers that read channels written by more than one layer (a residual sum)."""
        return {m.layer for g in self.groups if len(g.writers()) > 1 for m in g.members if m.role == "in"}


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy in eval mode without parametrizations (their current values baked in) or hooks."""
    twin = copy.deepcopy(model).eval()
    for m in list(twin.modules()):
        if parametrize.is_parametrized(m):
            # not remove_parametrizations: it deletes the property from the parametrized class,
            # which the copy shares with the original module
            values = {name: getattr(m, name).detach().clone() for name in m.parametrizations}
            del m.parametrizations
            m.__class__ = parametrize.type_before_parametrizations(m)
            for name, value in values.items():
                m.register_parameter(name, nn.Parameter(value))
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    for p in twin.parameters():
        p.requires_grad_(True)  # the dependency graph is traced through autograd
    return twin


def _input_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """The first prunable layer, when it consumes the model's input directly (a conv on x, a Linear on x.flatten(1))."""
    layers = prunable_layers(model)
    if not layers or not is_plain_layer(layers[0][1]):
        return None
    name, first = layers[0]
    seen = {}
    h = first.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    direct = x.flatten(1) if isinstance(first, nn.Linear) else x
    if "x" not in seen or seen["x"].shape != direct.shape or not torch.equal(seen["x"], direct):
        return None
    return name


def find_structure(model: nn.Module, example: torch.Tensor, output_layers: Sequence[str] | None = None) -> Structure:
    """Trace `model` (a plain copy of it) on `example` and collect its channel groups."""
    twin = plain_copy(model)
    names = {m: n for n, m in twin.named_modules()}
    layers = prunable_layers(twin)
    outputs = tuple(output_layers or ([layers[-1][0]] if layers else []))
    out_modules = [twin.get_submodule(n) for n in outputs]
    dg = build_graph(twin, example)
    groups, seen = [], set()
    roots = layers + [(name, m) for name, m in twin.named_modules() if is_router(m)]
    for name, module in roots:
        if not (is_plain_layer(module) or is_router(module)) or module not in dg.module2node:
            continue
        n = dg.get_out_channels(module)
        pruner = dg.get_pruner_of_module(module)
        if not n or pruner is None:
            continue
        group = to_group(dg, dg.get_pruning_group(module, pruner.prune_out_channels, list(range(n))), names, n, out_modules)
        key = frozenset((m.layer, m.role, tuple(sorted(m.idxs.tolist()))) for m in group.members)
        if key not in seen:
            seen.add(key)
            groups.append(group)
    norm_after = {}
    for name, module in layers:
        node = dg.module2node.get(module)
        if node is not None and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and len(node.outputs) == 1:
            nxt = node.outputs[0].module
            if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt in names:
                norm_after[name] = names[nxt]
    return Structure(groups, _input_layer(twin, example), outputs, norm_after)


def example_input(model: nn.Module, input_shape: Sequence[int], n: int = 2) -> torch.Tensor:
    """A fixed random batch of `input_shape` on the model's device and dtype."""
    p = next(model.parameters())
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *input_shape, generator=g).to(device=p.device, dtype=p.dtype)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _signature(model: nn.Module, input_shape: Sequence[int]) -> tuple:
    """What the structure depends on: the layers' names, kinds and sizes (read without computing any weight)."""
    sig = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            sig.append((name, "linear", m.in_features, m.out_features))
        elif isinstance(m, _LAYERS):
            sig.append((name, "conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            sig.append((name, "bn", m.num_features))
        elif is_router(m):
            sig.append((name, "router", m.in_channels, m.out_channels))
    return tuple(input_shape), tuple(sig)


def structure(model: nn.Module, input_shape: Sequence[int]) -> Structure:
    """find_structure on examples of `input_shape`, cached per model until its layers change."""
    sig = _signature(model, input_shape)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    found = find_structure(model, example_input(model, input_shape))
    _CACHE[model] = (sig, found)
    return found


def structure_or_none(model: nn.Module, input_shape: Sequence[int]) -> Structure | None:
    """structure(), or None (logged) when the model cannot be traced on inputs of that shape."""
    try:
        return structure(model, input_shape)
    except Exception as err:  # noqa: BLE001  (any tracing failure: callers fall back to per-layer rules)
        log.warning("could not trace %s on inputs of shape %s (%s: %s); treating its layers as independent",
                    type(model).__name__, tuple(input_shape), type(err).__name__, err)  # fmt: skip
        return None
