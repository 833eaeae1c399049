"""FLOPs and physical slimming through residual nets: channels followed across BatchNorms and residual sums."""
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparsity_bench.metrics import measure
from sparsity_bench.metrics.coupling import structure
from sparsity_bench.metrics.flops import dense_flops, layer_flops
from sparsity_bench.metrics.slim import check_loads_standalone, max_abs_diff, save, slim
from sparsity_bench.metrics.sparsity import prunable_layers
from sparsity_bench.models import AlexNet, ResNetCifar, WideResNet
from sparsity_bench.pruning import apply_masks, norm_masks

TINY = {
    "resnet32": (lambda: ResNetCifar(8, 10, 3, base_widths=(4, 8, 16)), (3, 8, 8)),
    "resnet32_b": (lambda: ResNetCifar(8, 10, 3, shortcut="B", base_widths=(4, 8, 16)), (3, 8, 8)),
    "resnet32_preact": (lambda: ResNetCifar(14, 10, 3, preact=True, shortcut="B", base_widths=(4, 8, 16)), (3, 8, 8)),
    "wrn": (lambda: WideResNet(10, 1, 0.3, 10, 3), (3, 8, 8)),
    "alexnet": (lambda: AlexNet((3, 63, 63), 10, 0.5, widths=(8, 16, 16, 16, 16), hidden=32), (3, 63, 63)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def flop_counter(model, shape) -> int:
    with FlopCounterMode(display=False) as c, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return c.get_total_flops()


@torch.no_grad()
def trained_batchnorms(model, g):
    """BatchNorms as after training: BN(0) = beta - gamma * mean / std is not zero."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.5, 0.5, generator=g)


@torch.no_grad()
def remove_filters(model, shape, filters: dict[str, list[int]]):
    """Zero whole conv filters and mask the BatchNorm channels after them, as every method's masks do."""
    masks = {}
    for name, rows in filters.items():
        w = model.get_submodule(name).weight
        keep = torch.ones_like(w, dtype=torch.bool)
        keep[rows] = False
        masks[f"{name}.weight"] = keep
    masks.update(norm_masks(model, masks, shape))
    apply_masks(model, masks)
    return masks


@pytest.mark.parametrize("name", list(TINY))
def test_dense_flops_of_every_model_are_the_flop_counters_and_the_sum_of_its_layers(name):
    make, shape = TINY[name]
    model = make()
    total = flop_counter(model, shape)
    assert dense_flops(model, shape) == total
    assert sum(f.dense for f in layer_flops(model, shape).values()) == total


def test_structure_of_a_resnet_couples_the_stream_and_frees_the_inner_convs():
    make, shape = TINY["resnet32_b"]
    st = structure(make(), shape)
    assert st.coupled_outputs == {"conv1", "layer1.0.conv2", "layer2.0.conv2", "layer2.0.shortcut.0",
                                  "layer3.0.conv2", "layer3.0.shortcut.0"}  # fmt: skip
    assert st.norm_after["layer1.0.conv1"] == "layer1.0.bn1" and st.norm_after["conv1"] == "bn1"
    assert "fc" in st.coupled_inputs and "layer2.0.conv1" in st.coupled_inputs
    stage1 = next(g for g in st.groups if "conv1" in g.writers())
    assert stage1.writers() == {"conv1", "layer1.0.conv2"} and not stage1.fixed
    assert {m.layer for m in stage1.members if m.role == "in"} == {"layer1.0.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"}
    # shortcut A: the zero-padding shortcut ends a stage's group and starts the next, as a layer would
    st_a = structure(TINY["resnet32"][0](), shape)
    stage2 = next(g for g in st_a.groups if "layer2.0.conv2" in g.writers())
    assert stage2.writers() == {"layer2.0.conv2", "layer2.0.shortcut"} and not any(g.fixed for g in st_a.groups[:-1])
    assert {(m.layer, m.role) for m in stage2.members if m.role != "norm"} == {
        ("layer2.0.conv2", "out"), ("layer2.0.shortcut", "route_out"), ("layer3.0.conv1", "in"), ("layer3.0.shortcut", "route_in"),
    }  # fmt: skip


@torch.no_grad()
def test_zero_padding_shortcut_channels_by_hand():
    make, shape = TINY["resnet32"]
    model = make().eval()
    trained_batchnorms(model, torch.Generator().manual_seed(3))
    # stage 2 (8 channels): the shortcut copies stage 1's 4 channels into 0..3 and pads 4..7 with zeros
    remove_filters(model, shape, {"layer2.0.conv2": [1, 6]})  # channel 1 still comes through the shortcut: it stays;
    expected = {  # channel 6 had only this filter: it goes, and the next shortcut copies nothing into stage 3's 6
        "conv1": 2 * 64 * 3 * 4 * 9,
        "layer1.0.conv1": 2 * 64 * 4 * 4 * 9,
        "layer1.0.conv2": 2 * 64 * 4 * 4 * 9,
        "layer2.0.conv1": 2 * 16 * 4 * 8 * 9,
        "layer2.0.conv2": 2 * 16 * 8 * 7 * 9,
        "layer3.0.conv1": 2 * 4 * 7 * 16 * 9,
        "layer3.0.conv2": 2 * 4 * 16 * 16 * 9,
        "fc": 2 * 16 * 10,
    }
    assert {k: v.structural for k, v in layer_flops(model, shape).items()} == expected
    x = torch.rand(16, *shape)
    result = slim(model, x, fold=False)
    assert sum(result.removed.values()) == 1
    assert flop_counter(result.model, shape) == sum(expected.values())
    assert max_abs_diff(model, result.model, x) < 1e-5


@torch.no_grad()
def test_structural_flops_through_a_residual_sum_by_hand():
    torch.manual_seed(0)
    make, shape = TINY["resnet32_b"]
    model = make().eval()
    trained_batchnorms(model, torch.Generator().manual_seed(0))
    remove_filters(model, shape, {
        "layer1.0.conv1": [1],  # inside a block: goes, with conv2's input 1
        "conv1": [2, 3],  # stream channel 2: the stem's and ...
        "layer1.0.conv2": [2],  # ... the block's filter gone: dead in every branch, it goes everywhere
    })  # stream channel 3: only the stem's filter is gone, the block still writes it: it stays
    # positions: 8x8 in stage 1, 4x4 in stage 2, 2x2 in stage 3; stage widths 4, 8, 16
    expected = {
        "conv1": 2 * 64 * 3 * 3 * 9,  # 3 RGB inputs, 3 live outputs (channel 2 gone)
        "layer1.0.conv1": 2 * 64 * 3 * 3 * 9,  # reads 3 stream channels, 3 filters left
        "layer1.0.conv2": 2 * 64 * 3 * 3 * 9,  # reads conv1's 3, writes 3 stream channels
        "layer2.0.conv1": 2 * 16 * 3 * 8 * 9,
        "layer2.0.conv2": 2 * 16 * 8 * 8 * 9,
        "layer2.0.shortcut.0": 2 * 16 * 3 * 8,
        "layer3.0.conv1": 2 * 4 * 8 * 16 * 9,
        "layer3.0.conv2": 2 * 4 * 16 * 16 * 9,
        "layer3.0.shortcut.0": 2 * 4 * 8 * 16,
        "fc": 2 * 16 * 10,
    }
    per_layer = layer_flops(model, shape)
    assert {k: v.structural for k, v in per_layer.items()} == expected
    # conv1's filter 3 and its BN channel are zero but layer1.0.conv2 writes channel 3: it is counted
    assert per_layer["conv1"].effective < per_layer["conv1"].structural
    x = torch.rand(16, *shape)
    result = slim(model, x, fold=False)
    assert flop_counter(result.model, shape) == sum(expected.values()) == measure(model, shape)["flops_structural"]
    assert result.removed == {"layer1.0.conv1": 1, "conv1": 1}  # conv1's root removes the stream channel everywhere
    assert max_abs_diff(model, result.model, x) < 1e-5


@torch.no_grad()
def test_a_removed_filter_whose_batchnorm_still_emits_a_constant_stays():
    make, shape = TINY["resnet32_b"]
    model = make().eval()
    trained_batchnorms(model, torch.Generator().manual_seed(1))
    model.layer1[0].conv1.weight[1] = 0  # without masking layer1.0.bn1: channel 1 carries BN(0) != 0
    per_layer = layer_flops(model, shape)
    assert per_layer["layer1.0.conv1"].structural == 2 * 64 * 4 * 4 * 9
    assert per_layer["layer1.0.conv2"].structural == 2 * 64 * 4 * 4 * 9
    remove_filters(model, shape, {"layer1.0.conv1": [1]})  # now with its BN channel: it goes
    assert model.layer1[0].bn1.weight[1] == 0 and model.layer1[0].bn1.bias[1] == 0
    assert layer_flops(model, shape)["layer1.0.conv2"].structural == 2 * 64 * 3 * 4 * 9


@torch.no_grad()
def random_structured(model, shape, g):
    """Random whole filters gone (with their BN channels), random inputs unread, random element-wise zeros."""
    layers = prunable_layers(model)
    filters = {}
    for i, (name, m) in enumerate(layers):
        w = m.weight
        w.mul_(torch.rand(w.shape, generator=g) > 0.3)
        if i < len(layers) - 1:
            filters[name] = torch.randperm(w.shape[0], generator=g)[: int(0.4 * w.shape[0])].tolist()
        if i > 0:
            w[:, torch.randperm(w.shape[1], generator=g)[: int(0.2 * w.shape[1])]] = 0
    remove_filters(model, shape, filters)


def randomly_slimmable(name: str, seed: int):
    """A tiny model of TINY in eval mode, with trained-looking BatchNorms and random structured zeros."""
    make, shape = TINY[name]
    g = torch.Generator().manual_seed(seed)
    model = make().eval()
    trained_batchnorms(model, g)
    random_structured(model, shape, g)
    return model, shape, g


@pytest.mark.parametrize("name", list(TINY))
def test_slimmed_model_equals_the_masked_one_for_random_structured_masks(name):
    torch.manual_seed(0)
    model, shape, g = randomly_slimmable(name, seed=0)
    x = torch.rand(32, *shape, generator=g)
    m = measure(model, shape)
    assert m["flops_structural"] < m["flops_dense"]
    kept = slim(model, x, fold=False)
    assert sum(kept.removed.values()) > 0
    assert max_abs_diff(model, kept.model, x) < 1e-5
    assert flop_counter(kept.model, shape) == m["flops_structural"]
    folded = slim(model, x, fold=True)
    assert max_abs_diff(model, folded.model, torch.rand(32, *shape, generator=g)) < 1e-5  # inputs not slimmed on
    assert flop_counter(folded.model, shape) <= m["flops_structural"]


def test_slim_pt_of_a_resnet_loads_and_runs_with_torch_load_alone(tmp_path):
    model, shape, g = randomly_slimmable("resnet32", seed=2)
    x = torch.rand(8, *shape, generator=g)
    result = slim(model, x)
    assert result.standalone is True
    path = save(result.model, tmp_path / "slim.pt")
    check_loads_standalone(path, shape)  # raises when it does not
    assert max_abs_diff(model, torch.load(path, weights_only=False), x) < 1e-5
