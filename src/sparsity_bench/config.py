"""Structured configs: the schema every run is validated against.

Each option of a config group (model, dataset, method) has its own dataclass,
registered in Hydra's ConfigStore under ``schema/<group>/<option>``; the YAML
file of that option lists it first in its defaults so that Hydra refuses
unknown keys and wrong types while composing. ``validate`` checks the final
config once more, because ``+key=value`` bypasses a schema, and turns it into
typed objects whose ``__post_init__`` checks ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


from .errors import ConfigError  # noqa: E402  (re-exported: config users import it from here)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Optim(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    multistep = "multistep"


class PruneRule(str, Enum):
    std = "std"  # |w| < threshold * std(W), per tensor (DeepHoyer's MNIST rule)
    abs = "abs"  # |w| < threshold
    sparsity = "sparsity"  # smallest |w| until prune.sparsity is reached
    keep = "keep"  # no pruning: only weights that are already zero are masked


class Scope(str, Enum):
    layer = "layer"
    global_ = "global"


class Granularity(str, Enum):
    """What a fraction counts, in the (fan_in, n_out) view of a weight (columns = output units)."""

    weight = "weight"  # the smallest |w| inside each column
    unit = "unit"  # whole columns, the smallest by L2 norm, per layer


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # bfloat16 autocast of the forward passes (training and evaluation)


class GateGranularity(str, Enum):
    neuron = "neuron"  # one gate per Linear input feature / Conv2d output filter (the L0 paper)
    weight = "weight"  # one gate per weight


# ---------------------------------------------------------------- models
@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class LeNet300Config(ModelConfig):
    name: str = "lenet300"
    hidden: list[int] = field(default_factory=lambda: [300, 100])

    def __post_init__(self) -> None:
        _require(all(h > 0 for h in self.hidden), "model.hidden sizes must be positive.")


@dataclass
class LeNet5Config(ModelConfig):
    name: str = "lenet5"


@dataclass
class ResNet32Config(ModelConfig):
    """He et al.'s CIFAR ResNet (6n + 2 layers); see conf/model/resnet32.yaml."""

    name: str = "resnet32"
    depth: int = 32
    width: int = 1  # stage widths 16/32/64 times this (the Targeted Dropout paper: 2)
    preact: bool = False  # pre-activation blocks (the Targeted Dropout paper's ResNet-32)
    shortcut: str = "A"  # A: zero-padding identity (the paper's CIFAR choice), B: 1x1 projection

    def __post_init__(self) -> None:
        _require(
            self.depth >= 8 and (self.depth - 2) % 6 == 0,
            f"model.depth must be 6n + 2 for a CIFAR ResNet (8, 14, 20, 32, 44, 56, 110, ...): got {self.depth}.",
        )
        _require(self.width >= 1, f"model.width is a positive integer multiplier of the stage widths (got {self.width}).")
        _require(self.shortcut in ("A", "B"), f"model.shortcut must be A (zero padding) or B (1x1 projection): got {self.shortcut}.")


@dataclass
class WRNConfig(ModelConfig):
    """Wide ResNet WRN-depth-widen_factor (Zagoruyko & Komodakis); see conf/model/wrn.yaml."""

    name: str = "wrn"
    depth: int = 28
    widen_factor: int = 10
    dropout: float = 0.0  # between the two convs of a block

    def __post_init__(self) -> None:
        _require(
            self.depth >= 10 and (self.depth - 4) % 6 == 0,
            f"model.depth must be 6n + 4 for a Wide ResNet (10, 16, 22, 28, 40, ...): got {self.depth}.",
        )
        _require(self.widen_factor >= 1, f"model.widen_factor must be a positive integer (got {self.widen_factor}).")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout is a drop probability in [0, 1) (got {self.dropout}).")


@dataclass
class AlexNetConfig(ModelConfig):
    """torchvision's AlexNet, the classifier sized to the data set; inputs of at least 63x63."""

    name: str = "alexnet"
    dropout: float = 0.5  # before the two hidden Linear layers

    def __post_init__(self) -> None:
        _require(0.0 <= self.dropout < 1.0, f"model.dropout is a drop probability in [0, 1) (got {self.dropout}).")


# ---------------------------------------------------------------- datasets
@dataclass
class DatasetConfig:
    name: str = MISSING
    root: Optional[str] = None  # None: $SPARSITY_BENCH_DATA, else <checkout>/data
    download: bool = True
    verify: bool = True
    limit: Optional[int] = None  # use only the first N training examples
    val_size: int = 5000  # carved from the end of the training set
    normalize: bool = False  # False: pixels in [0, 1] as the L0 paper

    def __post_init__(self) -> None:
        _require(self.limit is None or self.limit > 0, "dataset.limit must be a positive number of examples (or null for all).")
        _require(self.val_size >= 0, "dataset.val_size must be >= 0.")


@dataclass
class InMemoryConfig(DatasetConfig):
    """A small set held on the run device, augmented there batch by batch (training split only)."""

    augment: bool = False  # random crops of the zero-padded image and horizontal flips
    crop_padding: int = 4  # pixels of zero padding on each side before the random crop (0: no crop)
    flip: bool = True  # random horizontal flips (with augment=true)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.crop_padding >= 0, f"dataset.crop_padding must be >= 0 (got {self.crop_padding}).")


@dataclass
class MnistConfig(InMemoryConfig):
    name: str = "mnist"


@dataclass
class FashionMnistConfig(InMemoryConfig):
    name: str = "fashion_mnist"


@dataclass
class Cifar10Config(InMemoryConfig):
    name: str = "cifar10"
    augment: bool = True
    normalize: bool = True  # per-channel mean/std of the training split


@dataclass
class Cifar100Config(Cifar10Config):
    name: str = "cifar100"


@dataclass
class ImageNetConfig(DatasetConfig):
    """ILSVRC-2012 in class folders, streamed from disk by DataLoader workers."""

    name: str = "imagenet"
    val_size: int = 10000  # held out from the training images, a fixed random choice
    normalize: bool = True  # the usual ImageNet per-channel mean/std
    augment: bool = True  # RandomResizedCrop + horizontal flip for training
    crop_size: int = 224
    resize_size: int = 256  # evaluation: resize the short side, then centre-crop crop_size
    workers: int = 8  # DataLoader worker processes (0: load in the main process)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.workers >= 0, f"dataset.workers must be >= 0 (got {self.workers}).")
        _require(self.crop_size > 0, f"dataset.crop_size must be positive (got {self.crop_size}).")
        _require(
            self.resize_size >= self.crop_size,
            f"dataset.resize_size must be >= dataset.crop_size (got {self.resize_size} < {self.crop_size}).",
        )


@dataclass
class SyntheticConfig(InMemoryConfig):
    name: str = "synthetic"
    train_size: int = 2000
    test_size: int = 500
    num_classes: int = 10
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    noise: float = 1.0
    val_size: int = 200
    generator_seed: int = 1234

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.train_size > self.val_size, "dataset.train_size must exceed dataset.val_size.")
        _require(self.num_classes >= 2, "dataset.num_classes must be >= 2.")


# ---------------------------------------------------------------- methods
# the regularizers method.plus may add to any other method
PLUS_PENALTIES = ("l1", "l2", "hoyer", "group_hoyer", "group_lasso")


@dataclass
class MethodConfig:
    """Keys of every method. With target_sparsity set, a regularizer (steers_lam) has its lam
    steered during training toward that sparsity, starting from method.lam (methods/target.py);
    with method.plus, the added penalty's plus_lam is steered instead. The other methods are
    magnitude-pruned to it after training."""

    steers_lam: ClassVar[bool] = False  # lam is a regularizer's strength that target_sparsity may steer

    name: str = MISSING
    lam: float = 0.0
    target_sparsity: Optional[float] = None
    # With target_sparsity on a regularizer (methods/target.py): the controller's integral gain
    # (log lam per unit of log(density / asked density) per training phase), and the share of
    # the training phase over which the asked sparsity ramps up to target_sparsity.
    target_gain: float = 12.0
    target_ramp: float = 0.3
    # A second regularizer on top of this method (methods/combined.py), e.g. method=l0
    # method.plus=hoyer: L0's neuron gates with Hoyer-Square on the weights they gate.
    # plus names a weight penalty (PLUS_PENALTIES), plus_lam is its strength. With
    # target_sparsity on a regularizer, plus_lam is the strength steered; method.lam stays.
    plus: Optional[str] = None
    plus_lam: float = 0.0

    def __post_init__(self) -> None:
        _require(self.lam >= 0, f"method.lam must be >= 0 (got {self.lam}).")
        if self.plus is not None:
            _require(
                self.plus in PLUS_PENALTIES and self.plus != self.name,
                f"method.plus adds a weight penalty to method={self.name}: choose one of "
                f"{', '.join(p for p in PLUS_PENALTIES if p != self.name)} (got {self.plus}).",
            )
            _require(self.plus_lam > 0, f"method.plus={self.plus} needs method.plus_lam > 0, its strength (got {self.plus_lam}).")
        _require(
            self.target_sparsity is None or 0.0 <= self.target_sparsity < 1.0,
            f"method.target_sparsity must lie in [0, 1) (got {self.target_sparsity}).",
        )
        _require(self.target_gain >= 0, f"method.target_gain must be >= 0 (got {self.target_gain}).")
        _require(
            0.0 <= self.target_ramp <= 1.0,
            f"method.target_ramp is a share of the training phase and must lie in [0, 1] (got {self.target_ramp}).",
        )
        if self.steers_lam and self.target_sparsity is not None and self.plus is None:
            _require(
                self.start_lam() > 0,
                f"method.target_sparsity steers lam by multiplying it, starting from {self.start_lam_key()}, "
                f"so {self.start_lam_key()} must be > 0 (got {self.start_lam()}).",
            )

    def start_lam(self) -> float:
        """The strength the controller starts from."""
        return self.lam

    def start_lam_key(self) -> str:
        return "method.lam"


@dataclass
class NoneConfig(MethodConfig):
    name: str = "none"


@dataclass
class L1Config(MethodConfig):
    steers_lam: ClassVar[bool] = True
    name: str = "l1"
    lam: float = 1e-4


@dataclass
class L2Config(MethodConfig):
    steers_lam: ClassVar[bool] = True
    name: str = "l2"
    lam: float = 1e-4


@dataclass
class HoyerConfig(MethodConfig):
    steers_lam: ClassVar[bool] = True
    name: str = "hoyer"
    lam: float = 1e-4


@dataclass
class GroupHoyerConfig(MethodConfig):
    steers_lam: ClassVar[bool] = True
    name: str = "group_hoyer"
    lam: float = 1e-4
    l2: float = 0.0  # beta * ||W||^2 of the paper's structural runs

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.l2 >= 0, "method.l2 must be >= 0.")


@dataclass
class GroupLassoConfig(MethodConfig):
    steers_lam: ClassVar[bool] = True
    name: str = "group_lasso"
    lam: float = 1e-4


@dataclass
class MagnitudeConfig(MethodConfig):
    name: str = "magnitude"
    target_sparsity: Optional[float] = 0.9


@dataclass
class TDConfig(MethodConfig):
    """Targeted Dropout (Gomez et al. 2019); see conf/method/td.yaml for what each key does."""

    name: str = "td"
    variant: Granularity = Granularity.weight
    gamma: float = 0.5  # targeting fraction
    alpha: float = 0.5  # drop rate of the targeted weights/units
    unit_drop: Granularity = Granularity.unit  # variant=unit: one draw per unit (paper) or per weight (official code)
    ramp: bool = False
    ramp_fraction: float = 1.0  # T, as a fraction of the training phase
    eval_mask: bool = True  # evaluation removes the current candidates
    exclude: list[str] = field(default_factory=list)  # layer names TD leaves alone
    # layers targeted (shell patterns, e.g. ["layer*.conv1"]); None: every prunable layer, and for
    # variant=unit only those whose output channels are not shared with another layer (residual sums)
    layers: Optional[list[str]] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0.0 <= self.gamma <= 1.0, f"method.gamma is the targeted fraction and must lie in [0, 1] (got {self.gamma}).")
        _require(0.0 <= self.alpha <= 1.0, f"method.alpha is a drop probability and must lie in [0, 1] (got {self.alpha}).")
        _require(
            0.0 < self.ramp_fraction <= 1.0,
            f"method.ramp_fraction is the share of the training phase spent ramping and must lie in (0, 1] (got {self.ramp_fraction}).",
        )


@dataclass
class L0Config(MethodConfig):
    """Hard-concrete L0 gates (Louizos et al. 2018); see conf/method/l0.yaml for the meaning of each key."""

    steers_lam: ClassVar[bool] = True
    name: str = "l0"
    lam: float = 0.1  # lambda_code: the L0 term is (lam / N) * expected number of non-zero weights
    lam_per_layer: Optional[list[float]] = None  # L0-sep: one lam per prunable layer (overrides lam)
    granularity: GateGranularity = GateGranularity.neuron
    droprate_init: float = 0.5
    droprate_init_first: float = 0.2  # the first prunable layer
    weight_decay: float = 0.0  # expected L2: 0.5 * weight_decay * sum_g P(z_g != 0) ||theta_g||^2
    per_example: bool = False  # one gate sample per example instead of one per minibatch
    # gated layers (shell patterns, e.g. ["layer*.conv1"]); None: with neuron gates the layers whose
    # gated units are not shared with another layer (a residual sum), with weight gates every prunable layer
    layers: Optional[list[str]] = None

    def start_lam(self) -> float:
        return self.lam if self.lam_per_layer is None else max(self.lam_per_layer, default=0.0)

    def start_lam_key(self) -> str:
        return "method.lam" if self.lam_per_layer is None else "the largest of method.lam_per_layer"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("droprate_init", "droprate_init_first"):
            value = getattr(self, key)
            _require(0 < value < 1, f"method.{key} must lie in (0, 1) (got {value}).")
        _require(self.weight_decay >= 0, f"method.weight_decay must be >= 0 (got {self.weight_decay}).")
        _require(
            self.lam_per_layer is None or all(v >= 0 for v in self.lam_per_layer),
            f"method.lam_per_layer values must be >= 0 (got {self.lam_per_layer}).",
        )
        _require(
            not (self.per_example and self.granularity == GateGranularity.weight),
            "method.per_example=true needs method.granularity=neuron: a gate per weight and per example "
            "would need a separate weight matrix for every example.",
        )


# ---------------------------------------------------------------- phases
@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: Optim = Optim.adam
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.cosine
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the run
    lr_decay: float = 0.1
    grad_clip: float = 0.0  # 0: off
    ema: float = 0.0  # decay of a parameter EMA used for evaluation (the L0 paper: 0.999); 0: off
    eval_batch_size: int = 1000
    section: ClassVar[str] = "train"  # the config key, for messages

    def __post_init__(self) -> None:
        k = self.section
        _require(self.epochs >= 0, f"{k}.epochs must be >= 0 (got {self.epochs}).")
        _require(self.batch_size > 0, f"{k}.batch_size must be a positive integer (got {self.batch_size}).")
        _require(self.eval_batch_size > 0, f"{k}.eval_batch_size must be positive.")
        _require(self.lr > 0, f"{k}.lr must be > 0 (got {self.lr}).")
        _require(self.weight_decay >= 0, f"{k}.weight_decay must be >= 0.")
        _require(self.grad_clip >= 0, f"{k}.grad_clip must be >= 0 (0 turns it off).")
        _require(0 <= self.ema < 1, f"{k}.ema is a decay in [0, 1), 0 turning it off (got {self.ema}).")
        _require(all(0 < m < 1 for m in self.milestones), f"{k}.milestones are fractions of the run, each in (0, 1).")


@dataclass
class FinetuneConfig(TrainConfig):
    epochs: int = 5
    lr: float = 1e-3
    keep_best: bool = True  # keep the epoch with the best validation accuracy
    section: ClassVar[str] = "finetune"


@dataclass
class PruneConfig:
    rule: PruneRule = PruneRule.std
    threshold: float = 0.25  # std multiplier for rule=std, absolute value for rule=abs
    sparsity: float = 0.9  # for rule=sparsity
    # for rule=sparsity: per layer or one global threshold. A str, not the Scope enum:
    # OmegaConf parses enums by member name, and `global` cannot be one.
    scope: str = Scope.global_.value

    def __post_init__(self) -> None:
        _require(self.threshold >= 0, "prune.threshold must be >= 0.")
        _require(0 <= self.sparsity < 1, f"prune.sparsity must lie in [0, 1) (got {self.sparsity}).")
        _require(self.scope in {s.value for s in Scope}, f"prune.scope must be layer or global (got '{self.scope}').")


@dataclass
class CurveConfig:
    """The Targeted Dropout paper's evaluation: one-shot magnitude pruning of the trained
    model at each fraction, test accuracy without finetuning. fractions=[] turns it off."""

    fractions: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])
    granularity: Granularity = Granularity.weight
    exclude: list[str] = field(default_factory=list)  # layer names never pruned by the curve

    def __post_init__(self) -> None:
        bad = [f for f in self.fractions if not 0.0 <= f <= 1.0]
        _require(not bad, f"curve.fractions must each lie in [0, 1] (got {bad[0] if bad else None}).")


@dataclass
class MeasureConfig:
    """What is measured on the final model, after finetuning."""

    slim: bool = True  # build the physically slimmed model, check it against the masked one, save slim.pt
    fold_bias: bool = True  # fold units that only emit a bias into the next layer's bias, and remove them
    speed: bool = True  # time the dense and slimmed models (needs slim)
    repeats: int = 20  # timed rounds per measurement (the median is reported)
    warmup: int = 3  # untimed calls first
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])  # speedup_measured: at 256, else the largest
    csr: bool = True  # also time CSR sparse matmuls of the Linear layers (element-wise sparsity) at the largest batch
    also_cpu: bool = False  # on a CUDA run, time on the CPU too (speed.cpu)
    threads: Optional[int] = None  # CPU threads while timing; None: the run's (threads)

    def __post_init__(self) -> None:
        _require(self.repeats >= 1, f"measure.repeats must be >= 1 (got {self.repeats}).")
        _require(self.warmup >= 0, f"measure.warmup must be >= 0 (got {self.warmup}).")
        _require(self.threads is None or self.threads > 0, "measure.threads must be positive (or null for the run's).")
        _require(len(self.batch_sizes) > 0 and all(b > 0 for b in self.batch_sizes), "measure.batch_sizes must be positive batch sizes.")


@dataclass
class RunConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    method: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    seed: int = 0
    device: Device = Device.auto
    threads: Optional[int] = None  # CPU threads; None: torch's default
    progress: bool = True  # per-epoch progress bar on a terminal
    histograms: bool = True  # weight histograms in TensorBoard, once per epoch
    # Accelerator options (accel.py)
    precision: Precision = Precision.fp32
    channels_last: str = "auto"  # true | false | auto (auto = true: only conv nets are affected)
    compile: bool = False  # torch.compile the training forward pass

    def __post_init__(self) -> None:
        # a str, since `channels_last=true` arrives as a bool and `auto` as a string
        self.channels_last = str(self.channels_last).lower()
        _require(
            self.channels_last in ("true", "false", "auto"),
            f"channels_last must be true, false or auto (got '{self.channels_last}').",
        )


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {
        "lenet300": LeNet300Config,
        "lenet5": LeNet5Config,
        "resnet32": ResNet32Config,
        "wrn": WRNConfig,
        "alexnet": AlexNetConfig,
    },
    "dataset": {
        "mnist": MnistConfig,
        "fashion_mnist": FashionMnistConfig,
        "cifar10": Cifar10Config,
        "cifar100": Cifar100Config,
        "imagenet": ImageNetConfig,
        "synthetic": SyntheticConfig,
    },
    "method": {
        "none": NoneConfig,
        "l1": L1Config,
        "l2": L2Config,
        "magnitude": MagnitudeConfig,
        "hoyer": HoyerConfig,
        "group_hoyer": GroupHoyerConfig,
        "group_lasso": GroupLassoConfig,
        "td": TDConfig,
        "l0": L0Config,
    },
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


def _typed_group(node: Any, group: str) -> Any:
    from omegaconf.errors import OmegaConfBaseException

    name = node.get("name") if isinstance(node, dict) else None
    options = SCHEMAS[group]
    if name not in options:
        raise ConfigError(f"Unknown {group} '{name}': choose one of {', '.join(sorted(options))}.")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(options[name]), node))
    except OmegaConfBaseException as err:
        raise ConfigError(describe_omegaconf_error(err, prefix=group)) from None


def validate(cfg: DictConfig) -> RunConfig:
    """The final composed config as typed objects, or ConfigError with one sentence."""
    from omegaconf.errors import OmegaConfBaseException

    job_keys = [k for k in cfg if k != "hydra"]  # compose(return_hydra_config=True) adds hydra
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, job_keys), resolve=True)
    try:
        groups = {g: _typed_group(plain.get(g), g) for g in SCHEMAS}
        run: RunConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), plain))
    except OmegaConfBaseException as err:
        raise ConfigError(describe_omegaconf_error(err)) from None
    except ValueError as err:  # a __post_init__ range check
        raise ConfigError(str(err)) from None
    run.model, run.dataset, run.method = groups["model"], groups["dataset"], groups["method"]
    return run


def describe_omegaconf_error(err: Exception, prefix: str = "", source: str | None = None) -> str:
    """One sentence for an OmegaConf key or type error (keys inside a group get its prefix;
    source names the config file that set the key, when it was not the command line)."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    key = f"{prefix}.{key}" if prefix else key
    msg = str(err).splitlines()[0]
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        if source and "." in key:  # e.g. a preset's method option under another method=
            group = key.split(".")[0]
            return (
                f"Unknown config key '{key}', set by conf/{source}.yaml: the {group} you chose has no such option; "
                f"choose the {group} that config was written for, or one that has it."
            )
        return f"Unknown config key '{key}': check its spelling, or run with --cfg job to list the valid keys."
    if isinstance(err, ValidationError):
        return f"Invalid value for '{key}': {msg.rstrip('.')}."
    return f"Invalid config at '{key}': {msg.rstrip('.')}."
