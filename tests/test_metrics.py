import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparsity_bench.metrics import measure
from sparsity_bench.metrics.flops import dense_flops, layer_flops
from sparsity_bench.metrics.sparsity import architecture, count_nonzero
from sparsity_bench.models import LeNet5, LeNet300


def _flop_counter(model, shape):
    with FlopCounterMode(display=False) as c:
        model(torch.zeros(1, *shape))
    return c.get_total_flops()


def test_dense_flops_match_hand_count_and_flop_counter():
    # 2 x MACs: 784*300 + 300*100 + 100*10 = 266,200 MACs
    assert dense_flops(LeNet300(), (1, 28, 28)) == 532_400 == _flop_counter(LeNet300(), (1, 28, 28))
    # conv1 20*25*24*24 + conv2 50*20*25*8*8 + 800*500 + 500*10 = 2,293,000 MACs
    assert dense_flops(LeNet5(), (1, 28, 28)) == 4_586_000 == _flop_counter(LeNet5(), (1, 28, 28))
    per_layer = layer_flops(LeNet5(), (1, 28, 28))
    assert sum(f.dense for f in per_layer.values()) == 4_586_000


def _keep_inputs(linear: nn.Linear, n: int) -> None:
    with torch.no_grad():
        linear.weight[:, n:] = 0


def test_architecture_and_structural_flops_of_neuron_masks_on_lenet300():
    model = LeNet300()
    fc1, fc2, fc3 = model.net[1], model.net[3], model.net[5]
    a, b, c = 219, 214, 100  # the L0 paper's architecture
    _keep_inputs(fc1, a)
    _keep_inputs(fc2, b)
    _keep_inputs(fc3, c)
    m = measure(model, (1, 28, 28))
    assert m["architecture"] == "219-214-100"
    assert m["flops_structural"] == 2 * (a * b + b * c + 10 * c)
    # every weight between live units is non-zero here, so effective == structural
    assert m["flops_effective"] == m["flops_structural"]
    assert m["params_nonzero"] == 300 * a + 100 * b + 10 * c


def test_dead_unit_removes_its_outgoing_weights_too():
    model = LeNet300()
    fc1, fc2 = model.net[1], model.net[3]
    with torch.no_grad():
        fc1.weight[:50] = 0  # 50 hidden units receive nothing
        fc1.bias[:50] = 0  # ... and emit relu(0) = 0
    m = measure(model, (1, 28, 28))
    # fc2 still has non-zero columns for them, but they read a dead unit: not counted
    assert m["layers"][1]["flops_effective"] == 2 * 100 * 250
    assert m["layers"][0]["flops_effective"] == 2 * 784 * 250
    assert m["architecture"] == "784-300-100"  # raw units kept: columns of fc2 are non-zero


def test_conv_filters_and_flattened_inputs_on_lenet5():
    model = LeNet5()
    conv1, conv2 = model.features[0], model.features[3]
    fc1 = model.classifier[1]
    with torch.no_grad():
        conv2.weight[25:] = 0
        conv2.bias[25:] = 0
        fc1.weight[:, 45 * 16 :] = 0  # only the first 45 channels' 4x4 blocks are read
    m = measure(model, (1, 28, 28))
    assert m["architecture"] == "20-25-720-500"
    assert m["layers"][2]["units_kept"] == 45 * 16
    # conv2: 25 live filters x 20 inputs x 25 taps x 8*8 positions
    assert m["layers"][1]["flops_structural"] == 2 * 25 * 20 * 25 * 64
    # fc1 reads 25 live channels x 16 features (channels 25..44 are dead in conv2)
    assert m["layers"][2]["flops_structural"] == 2 * 25 * 16 * 500


def test_count_nonzero():
    model = LeNet300()
    with torch.no_grad():
        model.net[1].weight[0, :10] = 0
    total, nz = count_nonzero(model)
    assert (total, nz) == (266_200, 266_190)
    assert architecture(model) == "784-300-100"
