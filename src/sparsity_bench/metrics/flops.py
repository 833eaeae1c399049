"""FLOPs per example: 2 x the multiply-accumulates of conv and linear layers.

This is the convention of torch.utils.flop_counter, which counts the dense model.
The effective count removes what pruning made dead: zero weights, and whole units
whose output no longer reaches anything (or that receive nothing), together with
the weights that read them in the next layer.
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
    structural: int  # live input units x live output units (dense blocks), x positions x 2


def _weight_view(m: nn.Module, w: torch.Tensor, in_group: int) -> torch.Tensor:
    """[out units, in units, weights per (out, in) pair] view of a prunable weight."""
    if isinstance(m, nn.Linear):
        return w.reshape(w.shape[0], w.shape[1] // in_group, in_group)
    return w.reshape(w.shape[0], w.shape[1], -1)


@torch.no_grad()
def live_units(model: nn.Module, input_shape=None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Live input and output units of every prunable layer, and each layer's [out, in, pair] weight view.

    Units are linked along the forward order of prunable layers (a sequential
    chain; a Linear after a conv reads each channel as a block of spatial
    features). A unit between two layers is live when the producer can emit it
    (non-zero weights from live inputs, or a non-zero bias) and the consumer
    reads it (non-zero weights into live outputs). Removing a unit can kill
    others (a neuron that only read dead units emits nothing; a neuron only
    read by dead units is read by nobody), so this is iterated to a fixpoint:
    the units a physically slimmed model keeps. The model's input features are
    live when the first layer reads them; the last layer's outputs always are.
    """
    layers = prunable_layers(model)
    weights = [m.weight.detach() for _, m in layers]

    # in_group[i]: how many input features of layer i one producer unit occupies
    in_group = [1] * len(layers)
    for i in range(1, len(layers)):
        fan_in = weights[i].shape[1]
        producer_out = weights[i - 1].shape[0]
        in_group[i] = fan_in // producer_out if fan_in % producer_out == 0 else 1
    views = [_weight_view(m, w, g).ne(0) for (_, m), w, g in zip(layers, weights, in_group)]
    biases = [
        m.bias.detach().ne(0) if m.bias is not None else torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
        for (_, m), v in zip(layers, views)
    ]
    chained = [views[i].shape[0] == views[i + 1].shape[1] for i in range(len(layers) - 1)]

    live_in = [torch.ones(v.shape[1], dtype=torch.bool, device=v.device) for v in views]
    live_out = [torch.ones(v.shape[0], dtype=torch.bool, device=v.device) for v in views]
    while True:
        emits = [v[:, li].flatten(1).any(dim=1) | b for v, li, b in zip(views, live_in, biases)]
        reads = [v[lo].any(dim=0).any(dim=-1) for v, lo in zip(views, live_out)]
        new_in = [reads[0]] + [
            emits[i] & reads[i + 1] if chained[i] else live_in[i + 1] for i in range(len(layers) - 1)
        ]
        new_out = [new_in[i + 1] if chained[i] else live_out[i] for i in range(len(layers) - 1)] + [live_out[-1]]
        if all(torch.equal(a, b) for a, b in zip(new_in + new_out, live_in + live_out)):
            return live_in, live_out, views
        live_in, live_out = new_in, new_out


@torch.no_grad()
def layer_flops(model: nn.Module, input_shape) -> dict[str, LayerFlops]:
    """Dense, effective and structural FLOPs per prunable layer (live units: see live_units)."""
    layers = prunable_layers(model)
    positions = output_positions(model, input_shape)
    live_in, live_out, views = live_units(model)

    out: dict[str, LayerFlops] = {}
    for i, ((name, m), v) in enumerate(zip(layers, views)):
        pos = positions[name]
        per_pair = v.shape[2]
        live = v[live_out[i]][:, live_in[i]]
        out[name] = LayerFlops(
            dense=2 * pos * v.numel(),
            effective=2 * pos * int(live.sum()),
            structural=2 * pos * int(live_out[i].sum()) * int(live_in[i].sum()) * per_pair,
        )
    return out
