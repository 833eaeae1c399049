"""Physical slimming: the smaller dense model with the dead units of a pruned model removed.

A pruned model keeps its full shapes and holds exact zeros. Slimming removes
every unit (Linear output neuron, Conv output filter, and with it the matching
inputs of the layers that read it) that cannot influence the output:

- nobody reads it: every layer consuming the channel has all-zero weights for it;
- it emits nothing: every layer producing it has all-zero weights and bias, and
  every operation on the way maps zero to zero (ReLU, pooling, reshapes, sums).

These are the live units of ``flops.live_units``, so FlopCounterMode on the
slimmed model equals ``flops_structural``. A third kind is optional (``fold``):
a unit whose weights are all zero but whose bias is not emits an input
independent constant (relu(b) through a ReLU); it is removed after adding its
contribution to the bias of every layer that reads it. That is only exact when
the contribution is the same at every output position (no zero padding between
them), which is checked numerically; otherwise the unit is kept. Folded units
make the slimmed model smaller than ``flops_structural``, which counts them.

Which channels belong together, and the rule that declares them dead, are those
of coupling.py (torch-pruning's DependencyGraph, traced with an example input of
the data's shape): a group couples every layer that writes a channel with every
layer that reads it, across reshapes, concats and residual sums. A channel of a
residual stream is written by several layers (the stem and each block's last
conv, through their BatchNorms) and read by several (each block's first conv and
the classifier); it is removed only when every coupled layer agrees it is dead:
either none of the readers reads it, or none of the writers writes it and every
op in between keeps zero at zero. A BatchNorm keeps zero at zero only when
BN(0) = beta - gamma * mean / std is 0. Modules the rules do not understand
(grouped convs, LayerNorm, attention, channel padding, unknown element-wise ops)
make their whole group stay: slimming is conservative, and the result is checked
against the masked model on real inputs.

The surgery itself is torch-pruning's (group.prune). Two steps are our own:
folding constants into biases (torch-pruning drops channels, it does not move
their value), and removing input features of the first layer that it never
reads (torch-pruning cannot prune the network input; the slimmed model selects
the features it keeps with index_select before the first layer).

The result is a torch.fx.GraphModule: its pickle holds generated code calling
torch functions and standard torch.nn layers only, so ``torch.load(path,
weights_only=False)`` restores it without importing sparsity_bench.
"""
from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..atomic import atomic_path
from .coupling import Group, build_graph, channel_state, is_plain_layer, is_router, to_group
from .sparsity import prunable_layers

@dataclass
class SlimResult:
    model: nn.Module  # the slimmed model (a torch.fx.GraphModule)
    removed: dict[str, int] = field(default_factory=dict)  # layer -> output units removed
    folded: int = 0  # units removed after folding their constant output into the next bias
    inputs_kept: int | None = None  # input features the first layer still reads (None: all, no selection)
    standalone: bool | str = True  # a GraphModule that loads without sparsity_bench; else why not


@torch.no_grad()
def _fold(model: nn.Module, group: Group, candidates: list[int], x: torch.Tensor) -> list[int]:
    """Add the constant contribution of `candidates` (group channels) to their readers' biases.

    Returns the channels folded (the others are left alone): a channel is folded when
    what every reader receives from it is the same for every example, and the
    reader's response to it is the same at every output position.
    """
    readers = [(model.get_submodule(m.layer), m) for m in group.members if m.role == "in"]
    inputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [mod.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(mod, args[0])) for mod, _ in readers]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()

    ok = set(candidates)
    plans = []
    for mod, member in readers:
        idxs, roots = member.idxs.tolist(), member.roots.tolist()
        inp = inputs[mod]
        cols = [i for i, r in zip(idxs, roots) if r in ok]
        col_roots = [r for r in roots if r in ok]
        if not cols:
            continue
        sel = inp[:, cols]
        varies = (sel != sel[:1]).flatten(2).any(dim=2).any(dim=0) if sel.dim() > 2 else (sel != sel[:1]).any(dim=0)
        for r, v in zip(col_roots, varies.tolist()):
            if v:
                ok.discard(r)
        plans.append((mod, idxs, roots))
    if not ok:
        return []

    updates = []
    for mod, idxs, roots in plans:
        cols = [i for i, r in zip(idxs, roots) if r in ok]
        if not cols:
            continue
        const = inputs[mod][:1, cols]
        w = mod.weight[:, cols]
        if isinstance(mod, nn.Linear):
            contrib = F.linear(const, w)[0]
        else:
            if mod.padding_mode != "zeros":
                return []
            conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(mod)]
            out = conv(const, w, None, mod.stride, mod.padding, mod.dilation)[0].flatten(1)  # [out, positions]
            scale = out.abs().amax(dim=1).clamp_min(1.0)
            if ((out.amax(dim=1) - out.amin(dim=1)) > 1e-6 * scale).any():
                return []  # zero padding makes the contribution position dependent: keep these units
            contrib = out.mean(dim=1)
        updates.append((mod, contrib))
    for mod, contrib in updates:
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], device=contrib.device, dtype=contrib.dtype))
        mod.bias.add_(contrib)
    return sorted(ok)


def _select_inputs(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, int | None]:
    """Remove the input features the first layer never reads (torch-pruning cannot prune the input).

    Only when the first prunable layer consumes the model's input directly (a conv
    on x, or a Linear on x.flatten(1)); the model is then wrapped in a module that
    selects the kept features before calling it.
    """
    import torch_pruning as tp

    layers = prunable_layers(model)
    if not layers:
        return model, None
    first = layers[0][1]
    if not is_plain_layer(first):
        return model, None
    seen = {}
    h = first.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        model(x)
    finally:
        h.remove()
    flat = isinstance(first, nn.Linear)
    direct = x.flatten(1) if flat else x
    if seen["x"].shape != direct.shape or not torch.equal(seen["x"], direct):
        return model, None
    w = first.weight.detach()
    reads = w.ne(0).any(dim=0) if flat else w.ne(0).transpose(0, 1).flatten(1).any(dim=1)
    if bool(reads.all()) or not bool(reads.any()):
        return model, None
    unread = (~reads).nonzero().flatten().tolist()
    if flat:
        tp.prune_linear_in_channels(first, unread)
    else:
        tp.prune_conv_in_channels(first, unread)
    return _InputSelect(model, reads.nonzero().flatten(), flat), int(reads.sum())


class _InputSelect(nn.Module):
    """Keeps the input features (flat) or channels the first layer reads. Traced away by torch.fx."""

    def __init__(self, body: nn.Module, keep: torch.Tensor, flatten: bool):
        super().__init__()
        self.body = body
        self.flatten = flatten
        self.register_buffer("keep", keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.flatten(1)
        return self.body(x.index_select(1, self.keep))


def slim(model: nn.Module, x: torch.Tensor, fold: bool = True, output_layers: list[str] | None = None) -> SlimResult:
    """The slimmed copy of `model` (left untouched), evaluated in eval mode.

    x: a batch of real inputs (several examples: folding checks that a unit's
    output is the same for all of them). output_layers: layers whose outputs are
    the model's output, by name, whose outputs are never removed (default: the last prunable layer).
    """
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(True)  # the dependency graph is traced through autograd
    modules = dict(model.named_modules())
    output_layers = [modules[n] for n in (output_layers or [prunable_layers(model)[-1][0]])]
    dg = build_graph(model, x)
    names = {m: n for n, m in model.named_modules()}
    result = SlimResult(model=model)

    roots = [
        (m, dg.get_pruner_of_module(m).prune_out_channels)
        for m in dg.module2node
        if isinstance(m, nn.Module) and (is_plain_layer(m) or is_router(m)) and m not in output_layers
    ]  # fmt: skip
    with torch.no_grad():
        changed = True
        while changed:  # removing units can kill others (see flops.live_units): repeat to a fixpoint
            changed = False
            for module, prune_out in roots:
                n = dg.get_out_channels(module)
                if not n:
                    continue
                group = to_group(dg, dg.get_pruning_group(module, prune_out, list(range(n))), names, n, output_layers)
                if group.output:
                    continue
                ch = channel_state(group, modules)
                dead = ch.dead().nonzero().flatten().tolist()
                if len(dead) == n:  # no live unit left: keep one, so that no tensor gets a zero-size dimension
                    dead = dead[1:]
                folded = []
                if fold:
                    candidates = ch.constant().nonzero().flatten().tolist()
                    candidates = candidates[: max(0, n - len(dead) - 1)]  # keep at least one unit
                    if candidates:
                        folded = _fold(model, group, candidates, x)
                remove = sorted(set(dead) | set(folded))
                if not remove:
                    continue
                dg.get_pruning_group(module, prune_out, remove).prune()
                result.removed[names[module]] = result.removed.get(names[module], 0) + len(remove)
                result.folded += len(folded)
                changed = True

        model, result.inputs_kept = _select_inputs(model, x)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        result.model = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001  (data-dependent control flow): still slim, but tied to its classes
        result.model, result.standalone = model, f"torch.fx could not trace it: {type(err).__name__}: {err}"
    return result


@torch.no_grad()
def max_abs_diff(reference: nn.Module, slimmed: nn.Module, x: torch.Tensor) -> float:
    """max |logits difference| of two models on a batch, in fp32, both in eval mode."""
    modes = reference.training, slimmed.training
    reference.eval(), slimmed.eval()
    try:
        return float((reference(x).float() - slimmed(x).float()).abs().max())
    finally:
        reference.train(modes[0]), slimmed.train(modes[1])


def save(model: nn.Module, path: Path) -> Path:
    """Pickle the slimmed model (on CPU): torch.load(path, weights_only=False) gives it back."""
    path = Path(path)
    cpu = copy.deepcopy(model).cpu().eval()
    with atomic_path(path) as tmp:
        torch.save(cpu, tmp)
    return path


def check_loads_standalone(path: Path, input_shape, timeout: float = 120.0) -> None:
    """Load `path` in a fresh interpreter that cannot import sparsity_bench, and run it once.

    Raises RuntimeError with the child's error when it fails.
    """
    code = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'sparsity_bench':
                    raise ModuleNotFoundError('sparsity_bench is blocked here', name=name)

        sys.meta_path.insert(0, Block())
        sys.path = [p for p in sys.path if p and 'sparsity_bench' not in p]
        import torch
        m = torch.load({str(path)!r}, weights_only=False, map_location='cpu')
        y = m(torch.zeros(2, *{tuple(input_shape)!r}))
        assert y.shape[0] == 2 and torch.isfinite(y).all()
        assert not any(k.startswith('sparsity_bench') for k in sys.modules), 'sparsity_bench was imported'
        """
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{path} does not load on its own: {proc.stderr.strip().splitlines()[-1:] or proc.stdout}")
