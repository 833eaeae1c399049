"""Accelerator options on the CPU: bf16 autocast, channels_last, torch.compile."""
import pytest
import torch
from torch import nn

from sparsity_bench.accel import Accel
from sparsity_bench.config import ConfigError, CurveConfig, MeasureConfig, Precision, RunConfig
from sparsity_bench.models import LeNet5, LeNet300
from sparsity_bench.pipeline import Pipeline

from conftest import small_run, trained_outcome

CPU = torch.device("cpu")


def _tiny(model="lenet5", method="l1", epochs=1, **kw):
    cfg = small_run(model, method, epochs=epochs, ft_epochs=1)
    cfg.curve = CurveConfig(fractions=[0.5])
    cfg.measure = MeasureConfig(slim=False, speed=False)
    cfg.threads = 1
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_resolve_auto_is_channels_last_for_conv_nets_only_and_false_turns_it_off():
    lenet5, lenet300 = LeNet5(), LeNet300()
    assert Accel.resolve(RunConfig(), CPU, lenet5) == Accel(CPU, channels_last=True)  # the default: auto
    assert Accel.resolve(RunConfig(), CPU, lenet300) == Accel(CPU)
    assert Accel.resolve(RunConfig(channels_last="false"), CPU, lenet5) == Accel(CPU)
    assert Accel.resolve(RunConfig(channels_last="true"), CPU, lenet5).channels_last
    assert not Accel.resolve(RunConfig(channels_last="true"), CPU, lenet300).channels_last
    assert Accel.resolve(RunConfig(channels_last="auto"), torch.device("cuda"), lenet5).channels_last
    assert not Accel.resolve(RunConfig(channels_last="auto"), torch.device("cuda"), lenet300).channels_last
    assert Accel.resolve(RunConfig(precision=Precision.bf16), CPU, lenet5).bf16
    assert RunConfig(channels_last=True).channels_last == "true"  # a bool from the command line
    with pytest.raises(ConfigError, match="channels_last must be true, false or auto"):
        RunConfig(channels_last="sometimes")


def test_channels_last_changes_strides_not_results():
    torch.manual_seed(0)
    plain = LeNet5((3, 32, 32))
    accel = Accel(CPU, channels_last=True)
    fast = accel.prepare(LeNet5((3, 32, 32)))
    fast.load_state_dict(plain.state_dict())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert accel.input(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(accel.input(x)), plain(x), atol=1e-5)


def test_bf16_autocast_runs_training_and_evaluation_in_bfloat16(tmp_path):
    # LeNet-300-100: bf16 convolutions are slow on CPUs without bf16 units
    pipe = Pipeline(_tiny("lenet300", "none", epochs=2, precision=Precision.bf16), tmp_path / "bf16", {})
    dtypes = {True: set(), False: set()}  # layer outputs on data batches in training / in evaluation

    def record(module, inputs, out):
        if len(out) > 1:  # not the one-example FLOP count
            dtypes[module.training].add(out.dtype)

    pipe.model.net[1].register_forward_hook(record)
    results = pipe.run()
    assert dtypes == {True: {torch.bfloat16}, False: {torch.bfloat16}}
    assert all(p.dtype == torch.float32 for p in pipe.model.parameters())  # autocast keeps fp32 weights
    assert results["environment"]["accel"] == "bf16"
    fp32 = Pipeline(_tiny("lenet300", "none", epochs=2), tmp_path / "fp32", {}).run()
    assert fp32["phases"]["train"]["test_acc"] > 0.8
    for phase in ("train", "finetune"):
        assert abs(results["phases"][phase]["test_acc"] - fp32["phases"][phase]["test_acc"]) <= 0.05


def test_channels_last_run_matches_the_plain_run(tmp_path):
    pipe = Pipeline(_tiny(channels_last="true"), tmp_path / "cl", {})
    fast = pipe.run()
    plain = Pipeline(_tiny(channels_last="false"), tmp_path / "plain", {}).run()
    assert pipe.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)  # kept through training
    assert fast["environment"]["accel"] == "channels_last" and plain["environment"]["accel"] == "fp32"
    for phase in ("train", "prune", "finetune"):
        assert abs(fast["phases"][phase]["test_acc"] - plain["phases"][phase]["test_acc"]) <= 0.02


def test_compiled_training_forward_gives_the_same_run(tmp_path, monkeypatch):
    # inductor's C++ code generation would take minutes on two cores; the eager backend still
    # traces the forward with dynamo and runs the captured graph in the training loop
    compiles = []

    def eager_compile(model, **kw):
        compiles.append(model)
        return real_compile(model, backend="eager", **kw)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", eager_compile)
    reference = Pipeline(_tiny("lenet300"), tmp_path / "plain", {}).run()
    pipe = Pipeline(_tiny("lenet300", compile=True), tmp_path / "compiled", {})
    compiled = pipe.run()
    assert compiles == [pipe.model, pipe.model]  # the train and the finetune phase, on the plain module
    assert not any(k.startswith("_orig_mod") for k in pipe.model.state_dict())
    assert trained_outcome(compiled["final"]) == trained_outcome(reference["final"])
    torch._dynamo.reset()
