"""The CIFAR/ImageNet models: sizes against the papers, configs, and every method training on every model."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from sparsity_bench.cli import preflight
from sparsity_bench.config import (
    SCHEMAS, AlexNetConfig, CurveConfig, FinetuneConfig, L0Config, LeNet300Config, MeasureConfig, PruneConfig, ResNet32Config,
    RunConfig, SyntheticConfig, TDConfig, TrainConfig, WRNConfig,
)  # fmt: skip
from sparsity_bench.errors import ConfigError
from sparsity_bench.methods import build_method
from sparsity_bench.methods.l0 import L0, deterministic_gate
from sparsity_bench.methods.td import TD
from sparsity_bench.metrics import measure
from sparsity_bench.metrics.flops import dense_flops
from sparsity_bench.metrics.sparsity import prunable_layers
from sparsity_bench.models import AlexNet, ResNetCifar, WideResNet, build_model
from sparsity_bench.pipeline import Pipeline
from sparsity_bench.pruning import _param, apply_masks


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_counter(model: nn.Module, shape) -> int:
    p = next(model.parameters())
    with FlopCounterMode(display=False) as c, torch.no_grad():
        model.eval()(torch.zeros(1, *shape, device=p.device))
    return c.get_total_flops()


def cifar_resnet_macs(n: int, widths, stem: int, side: int = 32, projection: bool = False, classes: int = 10) -> int:
    """Multiply-accumulates of a 3-stage CIFAR ResNet, counted by hand: 3x3 convs, 1x1 projections, the classifier."""
    macs = 3 * stem * 9 * side * side
    c_in = stem
    for s, c in enumerate(widths):
        if s:
            side //= 2
        for b in range(n):
            macs += c_in * c * 9 * side * side + c * c * 9 * side * side
            if projection and c_in != c:
                macs += c_in * c * side * side
            c_in = c
    return macs + c_in * classes


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    "depth, option_a, option_b",
    [(20, 269_722, 272_474), (32, 464_154, 466_906), (56, 853_018, 855_770), (110, 1_727_962, 1_730_714)],
)
def test_cifar_resnet_parameters_match_he_et_al_with_shortcut_a(depth, option_a, option_b):
    # He et al. Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M, ResNet-110 1.7M (shortcut A)
    with torch.device("meta"):
        assert n_params(ResNetCifar(depth)) == option_a
        assert n_params(ResNetCifar(depth, shortcut="B")) == option_b


def test_resnet32_flops_full_size_by_hand_and_by_flop_counter():
    model = ResNetCifar(32)
    macs = cifar_resnet_macs(5, (16, 32, 64), 16)
    assert macs == 68_862_592
    assert dense_flops(model, (3, 32, 32)) == flop_counter(model, (3, 32, 32)) == 2 * macs == 137_725_184
    wide = ResNetCifar(32, preact=True, width=2, shortcut="B")  # the Targeted Dropout paper's ResNet-32
    assert dense_flops(wide, (3, 32, 32)) == 2 * cifar_resnet_macs(5, (32, 64, 128), 32, projection=True)
    assert [m.out_channels for m in (wide.layer1[0].conv1, wide.layer2[0].conv1, wide.layer3[0].conv1)] == [32, 64, 128]


def test_wrn_28_10_size_and_flops_without_a_real_forward():
    with torch.device("meta"):
        model = WideResNet(28, 10)
    assert n_params(model) == 36_479_194  # the WRN paper's 36.5M
    assert len([n for n, _ in prunable_layers(model) if n.endswith(".conv1") and n.startswith("layer")]) == 12
    macs = cifar_resnet_macs(4, (160, 320, 640), 16, projection=True)
    assert dense_flops(model, (3, 32, 32)) == flop_counter(model, (3, 32, 32)) == 2 * macs == 10_486_657_536


def test_alexnet_is_torchvisions_at_imagenet_size():
    with torch.device("meta"):
        ours, theirs = AlexNet(), torchvision.models.alexnet()
    assert n_params(ours) == n_params(theirs) == 61_100_840
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in theirs.state_dict().items()]
    # 2 x MACs: five convs at 55, 27, 13, 13, 13 pixels a side, then 9216-4096-4096-1000
    macs = (3 * 64 * 121 * 55**2 + 64 * 192 * 25 * 27**2 + 192 * 384 * 9 * 13**2 + 384 * 256 * 9 * 13**2
            + 256 * 256 * 9 * 13**2 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)  # fmt: skip
    assert dense_flops(ours, (3, 224, 224)) == flop_counter(ours, (3, 224, 224)) == 2 * macs == 1_428_376_960


def test_build_model_sizes_each_model_to_the_data():
    resnet = build_model(ResNet32Config(depth=20), (1, 28, 28), 100)
    assert resnet.conv1.in_channels == 1 and resnet.fc.out_features == 100 and len(resnet.layer2) == 3
    assert resnet(torch.zeros(2, 1, 28, 28)).shape == (2, 100)
    wrn = build_model(WRNConfig(depth=10, widen_factor=2, dropout=0.3), (3, 32, 32), 100)
    assert wrn.fc.in_features == 128 and wrn.fc.out_features == 100 and wrn.layer1[0].dropout.p == 0.3
    alex = build_model(AlexNetConfig(), (3, 64, 64), 7)
    assert alex.classifier[-1].out_features == 7
    with pytest.raises(ConfigError, match=r"model=alexnet needs inputs of at least 63x63 pixels \(got 32x32\)"):
        build_model(AlexNetConfig(), (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="takes images"):
        build_model(ResNet32Config(), (784,), 10)
    lenet = build_model(LeNet300Config(), (1, 28, 28), 10)  # the MNIST models are unchanged
    assert n_params(lenet) == 266_610


def test_model_configs_compose_and_bad_values_are_one_sentence():
    for args in (["model=resnet32", "model.depth=56", "model.preact=true", "model.width=2", "model.shortcut=B"],
                 ["model=wrn", "model.depth=16", "model.widen_factor=8", "model.dropout=0.3"], ["model=alexnet"]):  # fmt: skip
        assert preflight(args) is None, args
    for args, expected in [
        (["model=resnet32", "model.depth=33"], "model.depth must be 6n + 2 for a CIFAR ResNet"),
        (["model=wrn", "model.depth=26"], "model.depth must be 6n + 4 for a Wide ResNet"),
        (["model=alexnet", "model.depth=3"], "Unknown config key 'model.depth'"),
    ]:
        problem = preflight(args)
        assert problem is not None and expected in problem and "\n" not in problem, (args, problem)
    for make, expected in [
        (lambda: ResNet32Config(shortcut="C"), "model.shortcut must be A (zero padding) or B (1x1 projection)"),
        (lambda: ResNet32Config(width=0), "model.width is a positive integer multiplier"),
        (lambda: WRNConfig(widen_factor=0), "model.widen_factor must be a positive integer"),
        (lambda: WRNConfig(dropout=1.5), "model.dropout is a drop probability"),
        (lambda: AlexNetConfig(dropout=-0.1), "model.dropout is a drop probability"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            make()


# ---------------------------------------------------------------- which layers structured methods act on
TINY = {  # (model, input shape): small enough that every method runs in a fraction of a second
    "resnet32": (lambda: ResNetCifar(8, 10, 3, base_widths=(4, 8, 16)), (3, 8, 8)),
    "resnet32_preact_b": (lambda: ResNetCifar(8, 10, 3, preact=True, shortcut="B", base_widths=(4, 8, 16)), (3, 8, 8)),
    "wrn": (lambda: WideResNet(10, 1, 0.2, 10, 3), (3, 8, 8)),
    "alexnet": (lambda: AlexNet((3, 63, 63), 10, 0.5, widths=(8, 16, 16, 16, 16), hidden=32), (3, 63, 63)),
}
FIRST_CONVS = ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]


@pytest.mark.parametrize("name", list(TINY))
def test_neuron_gates_and_unit_dropout_default_to_the_units_no_residual_sum_shares(name):
    make, shape = TINY[name]
    model = make()
    l0 = L0(L0Config(), 100, shape)
    td = TD(TDConfig(variant="unit"), 100, shape)
    all_layers = [n for n, _ in prunable_layers(model)]
    if name == "alexnet":  # no residual sums: every layer
        assert [n for n, _ in l0.gated_layers(model)[0]] == all_layers
        assert [n for n, _ in td.targeted_layers(model)] == all_layers
    else:  # the first conv of each block, as the L0 paper gates WRN; TD also the classifier's outputs (the
        # classes, as on LeNet: method.exclude=[fc] spares them), which no other layer writes
        assert [n for n, _ in l0.gated_layers(model)[0]] == FIRST_CONVS
        assert [n for n, _ in td.targeted_layers(model)] == FIRST_CONVS + ["fc"]
    assert [n for n, _ in TD(TDConfig(), 100, shape).targeted_layers(model)] == all_layers  # weight TD: every layer
    assert len(L0(L0Config(granularity="weight"), 100, shape).gated_layers(model)[0]) == len(all_layers)
    chosen = L0(L0Config(layers=["layer*.conv*", "fc"] if name != "alexnet" else ["classifier.*"]), 100, shape)
    expected = [n for n in all_layers if ".conv" in n or n == "fc"] if name != "alexnet" else all_layers[5:]
    assert [n for n, _ in chosen.gated_layers(model)[0]] == expected
    with pytest.raises(ConfigError, match="method.layers names no prunable layer of this model: nope"):
        L0(L0Config(layers=["nope"]), 100, shape).gated_layers(model)


@torch.no_grad()
def test_l0_gates_a_conv_after_its_batchnorm():
    """z * BN(conv(x)): gating the conv's weights instead would be undone by BatchNorm in training."""
    torch.manual_seed(0)
    make, shape = TINY["resnet32"]
    model, reference = make(), make()
    reference.load_state_dict(model.state_dict())
    method = L0(L0Config(), 100, shape)
    method.attach(model)
    layer = method.layers[0]
    assert layer.norm == "layer1.0.bn1" and parametrize.is_parametrized(model.get_submodule("layer1.0.bn1"))
    layer.log_alpha.copy_(torch.tensor([-5.0, 0.0, 0.3, 5.0]))  # closed, two in between, open
    z = deterministic_gate(layer.log_alpha)
    assert z[0] == 0 and 0 < z[1] < 1 and z[3] == 1
    seen = {}
    model.layer1[0].bn1.register_forward_hook(lambda m, a, out: seen.setdefault("gated", out))
    reference.layer1[0].bn1.register_forward_hook(lambda m, a, out: seen.setdefault("plain", out))
    x = torch.rand(4, *shape)
    model.eval(), reference.eval()
    model(x), reference(x)
    assert torch.allclose(seen["gated"], seen["plain"] * z.view(1, -1, 1, 1), atol=1e-6)
    # outside a forward, in eval mode, the closed filter reads as removed (what the measurements see)
    assert model.layer1[0].conv1.weight[0].eq(0).all() and model.layer1[0].conv1.weight[1:].ne(0).any()
    # in training too: one sample z per channel scales BN's normalized output (BN cannot undo it)
    seen.clear()
    model.train(), reference.train()
    model(x), reference(x)
    ratio = (seen["gated"] / seen["plain"]).transpose(0, 1).flatten(1)  # [channel, batch * positions]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ((ratio[:, 0] > 0) & (ratio[:, 0] < 1)).any() and (ratio[:, 0] <= 1).all()


@pytest.mark.parametrize("name", ["resnet32_preact_b", "alexnet"])
@torch.no_grad()
def test_l0_expected_flops_with_hard_gates_are_the_structural_flops_of_what_they_leave(name):
    make, shape = TINY[name]
    model = make().eval()
    method = L0(L0Config(), 100, shape)
    method.attach(model)
    for layer in method.layers:
        layer.log_alpha.fill_(20.0)  # P(z != 0) = 1 to float precision
    assert method.expected_flops(model) == pytest.approx(dense_flops(model, shape), rel=1e-6)
    for layer in method.layers[:-1]:
        layer.log_alpha[::2] = -20.0  # P(z != 0) ~ 1e-8: closed
    structural = measure(model, shape)["flops_structural"]  # eval mode: closed units read as removed
    assert structural < dense_flops(model, shape)
    assert method.expected_flops(model) == pytest.approx(structural, rel=1e-6)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("method_name", list(SCHEMAS["method"]))
def test_every_method_trains_prunes_and_detaches_on_every_model(name, method_name):
    torch.manual_seed(0)
    make, shape = TINY[name]
    model = make()
    method = build_method(SCHEMAS["method"][method_name](), 100, shape)
    method.attach(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    x, y = torch.rand(4, *shape), torch.tensor([0, 1, 2, 3])
    model.train()
    for step in range(2):
        loss = F.cross_entropy(model(x), y)
        penalty = method.penalty(model)
        if penalty is not None:
            loss = loss + penalty
        opt.zero_grad()
        loss.backward()
        trained = [p for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert trained, "no parameter received a gradient"
        opt.step()
        method.step((step + 1) / 2)
    masks = method.masks(model, PruneConfig())
    method.detach(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    apply_masks(model, masks)
    for key, mask in masks.items():
        assert _param(model, key)[~mask].eq(0).all()
    model.eval()
    assert torch.isfinite(model(x)).all()


# ---------------------------------------------------------------- a whole run on a ResNet
def test_l0_run_on_a_resnet_prunes_filters_and_their_batchnorm_channels(tmp_path, monkeypatch):
    attach = L0.attach

    def attach_with_some_gates_closed(self, net):  # so that a short run has something pruned
        attach(self, net)
        with torch.no_grad():
            for layer in self.layers:
                layer.log_alpha[::2] = -6.0

    monkeypatch.setattr(L0, "attach", attach_with_some_gates_closed)
    cfg = RunConfig(
        model=ResNet32Config(depth=8),
        dataset=SyntheticConfig(train_size=200, test_size=100, val_size=50, shape=[3, 8, 8]),
        method=L0Config(droprate_init=0.05),
        train=TrainConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.05),
        finetune=FinetuneConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.01),
        prune=PruneConfig(),
        curve=CurveConfig(fractions=[]),
        measure=MeasureConfig(repeats=1, warmup=0, batch_sizes=[8], csr=False, threads=1),
        progress=False,
        histograms=False,
    )
    pipe = Pipeline(cfg, tmp_path, {"method": {"name": "l0"}})
    final = pipe.run()["final"]
    assert sorted(k.rsplit(".", 1)[0] for k in pipe.masks) == sorted(
        [f"layer{s}.0.conv1" for s in (1, 2, 3)] + [f"layer{s}.0.bn1" for s in (1, 2, 3)] * 2
    )
    for s, width in ((1, 16), (2, 32), (3, 64)):
        block = pipe.model.get_submodule(f"layer{s}.0")
        kept = block.conv1.weight.flatten(1).ne(0).any(dim=1)
        assert int(kept.sum()) == width // 2  # every other gate was closed
        assert block.bn1.weight[~kept].eq(0).all() and block.bn1.bias[~kept].eq(0).all()
    assert final["architecture"].split("-")[1:6:2] == ["8", "16", "32"]  # each block's conv1 kept half its filters
    assert final["slim_max_abs_diff"] < 1e-4
    assert final["flops_slim"] == final["flops_structural"] < final["flops_dense"]
