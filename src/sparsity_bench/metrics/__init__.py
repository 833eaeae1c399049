"""Measurements of a model: sparsity, units kept, FLOPs. Pure functions of its weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .flops import dense_flops, layer_flops
from .sparsity import architecture, count_nonzero, prunable_layers, unit_alive


@dataclass
class LayerRecord:
    name: str
    params: int
    nonzero: int
    units_total: int
    units_kept: int
    flops_dense: int
    flops_effective: int
    flops_structural: int


@torch.no_grad()
def measure(model: nn.Module, input_shape) -> dict:
    """The model-side part of results.json `final`, plus one record per prunable layer.

    Measured in eval mode (the model's mode is restored): the weights a method's
    reparametrization shows are those evaluation uses.
    """
    was_training = model.training
    model.eval()
    try:
        return _measure(model, input_shape)
    finally:
        model.train(was_training)


def _measure(model: nn.Module, input_shape) -> dict:
    flops = layer_flops(model, input_shape)
    layers = []
    for name, m in prunable_layers(model):
        alive = unit_alive(m)
        f = flops[name]
        layers.append(LayerRecord(
            name=name, params=m.weight.numel(), nonzero=int((m.weight != 0).sum()),
            units_total=alive.numel(), units_kept=int(alive.sum()),
            flops_dense=f.dense, flops_effective=f.effective, flops_structural=f.structural,
        ))  # fmt: skip
    total, nonzero = count_nonzero(model)
    return {
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsity": 1.0 - nonzero / total,
        "flops_dense": dense_flops(model, input_shape),
        "flops_effective": sum(r.flops_effective for r in layers),
        "flops_structural": sum(r.flops_structural for r in layers),
        "architecture": architecture(model),
        "layers": [asdict(r) for r in layers],
    }
