"""FLOPs per example: 2 x the multiply-accumulates of conv and linear layers.

This is the convention of torch.utils.flop_counter, which counts the dense model.
The effective count removes what pruning made dead: zero weights, and whole units
whose output no longer reaches anything (or that carry nothing), together with
the weights that read them in the next layers. Units are channels, followed
through reshapes and residual sums (coupling.py): a channel of a residual sum is
dead only when it is dead in every branch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .sparsity import prunable_layers


def _example(model: nn.Module, input_shape) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)


@torch.no_grad()
def dense_flops(model: nn.Module, input_shape) -> int:
    """Total FLOPs of one example, counted by torch.utils.flop_counter."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(_example(model, input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def output_positions(model: nn.Module, input_shape) -> dict[str, int]:
    """Output positions per example of each prunable layer (H_out * W_out for conv, 1 for linear)."""
    positions: dict[str, int] = {}
    hooks = []
    for name, m in prunable_layers(model):
        def hook(mod, inp, out, name=name):
            positions[name] = out[0, 0].numel() if out.dim() > 2 else 1
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(_example(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return positions


@dataclass
class LayerFlops:
    dense: int
    effective: int  # non-zero weights between live units, x positions x 2
    structural: int  # live input features x live output units x taps (dense blocks), x positions x 2


@torch.no_grad()
def live_units(model: nn.Module, input_shape) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Live input features and output units of every prunable layer, and each layer's [out, in, taps] weight view.

    Which units belong together comes from the model's channel groups
    (coupling.structure: one group per set of channels that can only go together,
    across reshapes and residual sums). A channel is live unless the rule of
    coupling.py says it is dead, evaluated on the current weights between live
    units only. Removing a unit can kill others (a neuron that only read dead
    units carries nothing; a neuron only read by dead units is read by nobody), so
    this is iterated to a fixpoint: the units a physically slimmed model keeps. A
    group where every channel is dead keeps its first, as the slimmer does. The
    model's input features are live when the first layer reads them directly
    (and reads them); channels of the model's output, and of groups the rule does
    not understand, are always live.
    """
    from .coupling import channel_state, structure, weight_view

    st = structure(model, input_shape)
    layers = prunable_layers(model)
    modules = dict(model.named_modules())
    views = [weight_view(m).ne(0) for _, m in layers]
    live_in = {name: torch.ones(v.shape[1], dtype=torch.bool, device=v.device) for (name, _), v in zip(layers, views)}
    live_out = {name: torch.ones(v.shape[0], dtype=torch.bool, device=v.device) for (name, _), v in zip(layers, views)}
    view_of = {name: v for (name, _), v in zip(layers, views)}
    for name in {m.layer for g in st.groups for m in g.members if m.role.startswith("route")}:
        router = modules[name]
        live_in[name] = torch.ones(router.in_channels, dtype=torch.bool)
        live_out[name] = torch.ones(router.out_channels, dtype=torch.bool)
    while True:
        changed = False
        for group in st.groups:
            if group.fixed:
                continue
            dead = channel_state(group, modules, live_in, live_out).dead()
            if bool(dead.all()):
                dead[0] = False
            for m in group.members:
                side = live_out if m.role in ("out", "route_out") else live_in if m.role in ("in", "route_in") else None
                if side is None:
                    continue
                now = side[m.layer].clone()
                now[m.idxs.to(now.device)] = ~dead[m.roots.to(dead.device)].to(now.device)
                if not torch.equal(now, side[m.layer]):
                    side[m.layer], changed = now, True
        if st.input_layer is not None:
            name = st.input_layer
            reads = view_of[name][live_out[name]].any(dim=0).any(dim=-1)
            if not torch.equal(reads, live_in[name]):
                live_in[name], changed = reads, True
        if not changed:
            names = [name for name, _ in layers]
            return [live_in[n] for n in names], [live_out[n] for n in names], views


@torch.no_grad()
def layer_flops(model: nn.Module, input_shape) -> dict[str, LayerFlops]:
    """Dense, effective and structural FLOPs per prunable layer (live units: see live_units)."""
    layers = prunable_layers(model)
    positions = output_positions(model, input_shape)
    live_in, live_out, views = live_units(model, input_shape)

    out: dict[str, LayerFlops] = {}
    for i, ((name, m), v) in enumerate(zip(layers, views)):
        pos = positions[name]
        taps = v.shape[2]
        live = v[live_out[i]][:, live_in[i]]
        out[name] = LayerFlops(
            dense=2 * pos * v.numel(),
            effective=2 * pos * int(live.sum()),
            structural=2 * pos * int(live_out[i].sum()) * int(live_in[i].sum()) * taps,
        )
    return out
