"""Typed configuration tree: YAML in, validated dataclasses out.

A run is described by one tree of dataclasses (``Config``). It is loaded from a YAML file
(``yaml.safe_load``), optionally inheriting from another file through a top-level ``base:`` key,
then patched by dotted ``key=value`` overrides from the command line. Every key is checked against
the dataclass fields: an unknown key or a value of the wrong type raises ``ConfigError`` naming the
dotted key path (and, for unknown keys, the nearest valid key). Each section validates its own
values in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid. The message names the dotted key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

SaliencyMode = Literal["auto", "none", "detached", "differentiable"]


@dataclass
class ModelConfig:
    variant: str = "multimix"
    """One of the paper's nine models (see mmdist.model.variants.VARIANTS)."""
    saliency: SaliencyMode = "auto"
    """Saliency bridge: 'auto' takes the variant's own (detached for the bridged variants, none
    otherwise); 'detached' is the reference code's constant decoder input; 'differentiable' keeps
    the saliency in the graph so the segmentation loss trains the encoder through it."""
    width: float = 1.0
    """Channel multiplier (1.0 = the paper's 16..256 channels); small values for quick tests."""
    dropout: float = 0.25
    saliency_inner_scale: float = 1024.0
    """Fixed factor the class score is multiplied by before the inner gradient under fp16 (and
    divided out after), so small input gradients do not flush to zero. Keep well below 2**16."""

    def __post_init__(self) -> None:
        from mmdist.model.variants import VARIANTS

        _check(self.variant in VARIANTS, "model.variant",
               f"unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        _check(self.width > 0, "model.width", "must be > 0")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(1.0 <= self.saliency_inner_scale <= 2.0**14, "model.saliency_inner_scale",
               "must be in [1, 16384] (fp16 overflows the seed gradient near 2**16)")
        spec = VARIANTS[self.variant]
        if self.saliency in ("detached", "differentiable"):
            _check(spec.classifier and spec.decoder, "model.saliency",
                   f"variant {self.variant!r} has no classifier and decoder to bridge; use 'none'")

    @property
    def resolved_saliency(self) -> str:
        """The saliency mode in force: 'auto' resolved through the variant table."""
        from mmdist.model.variants import VARIANTS

        if self.saliency == "auto":
            return "detached" if VARIANTS[self.variant].bridge else "none"
        return self.saliency


@dataclass
class SyntheticDomainConfig:
    """Knobs of one synthetic 'source' (hospital/scanner): the paper's data come from two."""

    gamma: float = 1.0
    """Intensity curve exponent applied to the rendered image."""
    contrast: float = 1.0
    brightness: float = 0.0
    noise: float = 0.03
    """Standard deviation of additive Gaussian noise, in [0, 1] intensity units."""

    def __post_init__(self) -> None:
        _check(self.gamma > 0, "gamma", "must be > 0")
        _check(self.contrast > 0, "contrast", "must be > 0")
        _check(self.noise >= 0, "noise", "must be >= 0")


@dataclass
class SourceConfig:
    """Where one task's images come from."""

    kind: Literal["synthetic", "cache", "csv", "kermany", "jsrt", "montgomery", "shenzhen", "nih",
                  "folder"] = "synthetic"
    """'synthetic' is the built-in generator; 'cache' a folder written by ``mmdist.prepare``; the
    other kinds are raw public layouts, prepared into ``<output_dir>/../cache`` on first use."""
    path: Optional[str] = None
    """Dataset folder (raw layout or prepared cache); unused for 'synthetic'."""
    count: int = 600
    """Synthetic only: number of images to generate for this task (train+val+test)."""
    domain: SyntheticDomainConfig = field(default_factory=SyntheticDomainConfig)
    options: Any = field(default_factory=dict)
    """Raw kinds only: options of the layout adapter (mmdist.data.adapters), e.g. for nih
    ``{positive: Pneumonia, negative: No Finding, others: unlabeled, views: [PA],
    max_per_patient: 1}``, for kermany ``{splits: [train]}``, for csv ``{csv: labels.csv}``.
    An option the adapter does not take is reported when the source is prepared."""
    prepare_workers: int = 1
    """Raw kinds only: decoding processes when the folder is prepared on first use."""

    def __post_init__(self) -> None:
        if self.kind != "synthetic":
            _check(self.path is not None, "path", f"kind {self.kind!r} needs a dataset path")
        _check(self.count >= 10, "count", "must be >= 10")
        _check(isinstance(self.options, dict) and all(isinstance(k, str) for k in self.options),
               "options", f"must be a mapping of option names to values, got {self.options!r}")
        _check(not self.options or self.kind not in ("synthetic", "cache"), "options",
               f"kind {self.kind!r} takes no adapter options (only raw dataset kinds do)")
        _check(self.prepare_workers >= 1, "prepare_workers", "must be >= 1")


Budget = Union[int, Literal["full"]]


@dataclass
class BudgetConfig:
    """Label budgets and splits (the paper's |D_l^c| and |D_l^s|)."""

    classification_labeled: Budget = 100
    """Labeled classification images; the rest of the training split is the unlabeled pool."""
    segmentation_labeled: Budget = 10
    """Labeled segmentation images (masks); the rest of the training split is unlabeled."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("classification_labeled", "segmentation_labeled"):
            value = getattr(self, name)
            _check(value == "full" or (isinstance(value, int) and value >= 1), name,
                   f"must be a positive integer or 'full', got {value!r}")
        _check(0 < self.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)")
        _check(0 <= self.test_fraction < 0.5, "test_fraction", "must be in [0, 0.5)")


@dataclass
class AugmentConfig:
    """Weak and strong views (the policy itself lives in mmdist.augment.policy)."""

    backend: Literal["torch", "dali"] = "torch"
    device: Literal["cpu", "gpu"] = "cpu"
    strong_ops: int = 2
    """RandAugment: number of ops drawn per image."""
    strong_magnitude: int = 10
    """RandAugment: maximum magnitude (1..10)."""
    strong_apply: Literal["always", "half"] = "always"
    """'always' applies every drawn op (FixMatch); 'half' applies each with p=0.5 (the reference)."""
    pad_fraction: float = 0.125
    """Reflect padding of the weak random crop, as a fraction of the image size."""
    threads: int = 2
    """CPU threads of the DALI pipeline (backend 'dali'); the torch backend uses data.workers."""

    def __post_init__(self) -> None:
        _check(1 <= self.strong_ops <= 14, "strong_ops", "must be in [1, 14]")
        _check(self.threads >= 1, "data.augment.threads", "must be >= 1")
        _check(1 <= self.strong_magnitude <= 10, "strong_magnitude", "must be in [1, 10]")
        _check(0 <= self.pad_fraction <= 0.5, "pad_fraction", "must be in [0, 0.5]")


@dataclass
class DataConfig:
    image_size: int = 256
    """Square input size in pixels; a multiple of 32 (five encoder levels and the class pool)."""
    batch_size: int = 10
    """Images per stream per rank (the reference uses 10 for each of its five streams)."""
    eval_batch_size: int = 32
    classification: SourceConfig = field(default_factory=SourceConfig)
    segmentation: SourceConfig = field(default_factory=lambda: SourceConfig(
        domain=SyntheticDomainConfig(gamma=1.3, contrast=0.85, brightness=0.05, noise=0.05)))
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 0
    """Background processes that assemble batches (0 = in the training process)."""

    def __post_init__(self) -> None:
        _check(self.image_size >= 32 and self.image_size % 32 == 0, "data.image_size",
               f"must be a positive multiple of 32, got {self.image_size}")
        _check(self.batch_size >= 1, "data.batch_size", "must be >= 1")
        _check(self.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1")
        _check(self.workers >= 0, "data.workers", "must be >= 0")


@dataclass
class LossConfig:
    tau: float = 0.7
    """FixMatch confidence threshold for pseudo-labels."""
    lambda_u: float = 0.25
    """Weight of the FixMatch unlabeled loss."""
    lambda_d: float = 5.0
    """Weight of the Dice loss."""
    lambda_kl: float = 0.01
    """Weight of the segmentation consistency KL (labeled vs unlabeled predictions)."""
    kl: Literal["bernoulli", "reference"] = "bernoulli"
    """'bernoulli' is a real per-pixel foreground/background KL; 'reference' reproduces the authors'
    softmax over one channel, which is identically zero (kept only to reproduce their numbers)."""
    mixmatch_temperature: float = 0.5
    mixmatch_alpha: float = 0.75
    mixmatch_lambda_u: float = 75.0
    mixmatch_rampup_steps: int = 1000

    def __post_init__(self) -> None:
        _check(0.0 <= self.tau <= 1.0, "losses.tau", "must be in [0, 1]")
        for name in ("lambda_u", "lambda_d", "lambda_kl", "mixmatch_lambda_u"):
            _check(getattr(self, name) >= 0, f"losses.{name}", "must be >= 0")
        _check(self.mixmatch_temperature > 0, "losses.mixmatch_temperature", "must be > 0")
        _check(self.mixmatch_alpha > 0, "losses.mixmatch_alpha", "must be > 0")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """Adam learning rate for the whole global batch of one rank (see scale_lr)."""
    weight_decay: float = 0.0
    lr_step_epochs: int = 8
    """Multiply the learning rate by lr_gamma every this many epochs (the paper: 0.1 every 8)."""
    lr_gamma: float = 0.1
    scale_lr: Literal["none", "linear", "sqrt"] = "none"
    """Scale lr with the number of ranks (global batch / per-rank batch)."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0")
        _check(self.lr_step_epochs >= 1, "optim.lr_step_epochs", "must be >= 1")
        _check(0 < self.lr_gamma <= 1, "optim.lr_gamma", "must be in (0, 1]")


@dataclass
class TrainerConfig:
    max_steps: int = 2000
    steps_per_epoch: int = 0
    """Steps per epoch for the learning-rate schedule; 0 derives it from the unlabeled
    classification pool (or the largest stream) and the batch size, like the reference loader."""
    val_every: int = 200
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: Union[bool, str] = False
    """True resumes from the run directory's latest checkpoint; a path resumes from that file."""
    image_log_every: int = 200
    """TensorBoard images (inputs, saliency, predicted masks) every this many steps (0 = never)."""
    progress: bool = True
    threads: int = 0
    """torch intra-op threads (0 leaves torch's default)."""
    deterministic: bool = False

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, "trainer.max_steps", "must be >= 1")
        for name in ("steps_per_epoch", "val_every", "log_every", "checkpoint_every",
                     "image_log_every", "threads"):
            _check(getattr(self, name) >= 0, f"trainer.{name}", "must be >= 0")
        _check(self.keep_checkpoints >= 1, "trainer.keep_checkpoints", "must be >= 1")


@dataclass
class EngineConfig:
    strategy: Literal["single", "ddp", "deepspeed"] = "single"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deepspeed_config: Optional[str] = None
    """Path to a DeepSpeed JSON (configs/deepspeed/zero*.json); needed for strategy=deepspeed."""
    collective_timeout_s: float = 300.0
    """A rank waiting longer than this in a collective fails the job instead of hanging."""
    channels_last: bool = True
    """Keep activations NHWC (torch.channels_last): oneDNN convolutions on the CPU and tensor-core
    convolutions on the GPU run markedly faster that way (1.8x for a 128 px step on a 2-core CPU)."""
    find_unused_parameters: Literal["auto", "true", "false"] = "auto"
    """DDP: 'auto' turns it on only for variants/losses that leave parameters without gradients."""

    def __post_init__(self) -> None:
        _check(self.collective_timeout_s > 0, "engine.collective_timeout_s", "must be > 0")
        if self.strategy == "deepspeed":
            _check(self.deepspeed_config is not None, "engine.deepspeed_config",
                   "strategy=deepspeed needs a DeepSpeed JSON (e.g. configs/deepspeed/zero1.json)")
            _check_deepspeed_json(read_deepspeed_json(self.deepspeed_config), self.deepspeed_config)

    @property
    def zero_stage(self) -> int:
        """The DeepSpeed ZeRO stage of ``deepspeed_config`` (0 when not using DeepSpeed)."""
        if self.strategy != "deepspeed":
            return 0
        return int(read_deepspeed_json(self.deepspeed_config).get("zero_optimization", {})
                   .get("stage", 0))

    @property
    def on_cpu(self) -> bool:
        """The run's device is the CPU (named, or 'auto' on a machine without CUDA)."""
        if self.device == "auto":
            import torch

            return not torch.cuda.is_available()
        return self.device == "cpu"


def read_deepspeed_json(path: str) -> dict:
    """Read a DeepSpeed JSON; a relative path is taken from the working directory, else from the
    repository root (so ``configs/deepspeed/zero1.json`` works from anywhere)."""
    import json

    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.is_file():
        beside_package = Path(__file__).resolve().parents[1] / candidate
        if beside_package.is_file():
            candidate = beside_package
    if not candidate.is_file():
        raise ConfigError(f"engine.deepspeed_config: DeepSpeed JSON not found: {path}")
    try:
        data = json.loads(candidate.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"engine.deepspeed_config: {candidate}: not valid JSON "
                          f"(line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"engine.deepspeed_config: {candidate}: the top level must be an object")
    return data


def _check_deepspeed_json(data: dict, path: str) -> None:
    """What the DeepSpeed JSON may say: ZeRO, clipping and communication; not what the training
    config already decides (precision, optimizer, schedule, batch)."""
    key = f"engine.deepspeed_config ({path})"
    _check("gradient_clipping" in data, key,
           "set 'gradient_clipping' explicitly (DeepSpeed clips at 1.0 when it is absent; "
           "0.0 turns clipping off, as under DDP)")
    _check(isinstance(data.get("gradient_clipping"), (int, float))
           and data["gradient_clipping"] >= 0, key, "'gradient_clipping' must be a number >= 0")
    for section in ("fp16", "bf16", "torch_autocast", "amp"):
        _check(not (isinstance(data.get(section), dict) and data[section].get("enabled", False)),
               key, f"remove the '{section}' section: precision is engine.precision")
    for section, owner in (("optimizer", "the trainer's Adam (optim.*)"),
                           ("scheduler", "the trainer's StepLR (optim.lr_step_epochs)"),
                           ("train_batch_size", "data.batch_size per rank"),
                           ("train_micro_batch_size_per_gpu", "data.batch_size per rank")):
        _check(section not in data, key, f"remove '{section}': it is set by {owner}")
    _check(data.get("gradient_accumulation_steps", 1) == 1, key,
           "'gradient_accumulation_steps' must be 1 (the trainer steps after every batch)")
    zero = data.get("zero_optimization", {})
    _check(isinstance(zero, dict) and zero.get("stage", 0) in (0, 1, 2, 3), key,
           "'zero_optimization.stage' must be 0, 1, 2 or 3")


@dataclass
class CrossDomainSetConfig(SourceConfig):
    """One cross-domain test set: a whole dataset from another source, evaluated (never trained
    on) for one task. The source keys (kind, path, count, domain) are those of data.classification."""

    name: str = ""
    """Short name of the set in eval/metrics.json and the tables (letters, digits, '_', '-', '.')."""
    task: Literal["classification", "segmentation"] = "segmentation"
    """Which head it tests: classification needs labels, segmentation needs masks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.name)), "name",
               f"must be a non-empty name of letters, digits, '_', '-' or '.', got {self.name!r}")


IN_DOMAIN_TEST_SETS = ("classification", "segmentation")
"""Names of the in-domain test sets (the test splits of data.classification/segmentation)."""


@dataclass
class EvaluationConfig:
    """``python -m mmdist.evaluate``: which test sets besides the in-domain test splits."""

    cross_domain: list[CrossDomainSetConfig] = field(default_factory=list)
    """Cross-domain test sets, e.g. [{name: shenzhen, task: segmentation, kind: shenzhen,
    path: /data/shenzhen-lungseg}]."""
    examples: int = 8
    """Images shown in the boundary-overlay and saliency figures (per set / per class)."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.cross_domain]
        for name in names:
            _check(names.count(name) == 1 and name not in IN_DOMAIN_TEST_SETS,
                   "evaluation.cross_domain",
                   f"test set name {name!r} is used twice or is an in-domain set's name "
                   f"{IN_DOMAIN_TEST_SETS}")
        _check(1 <= self.examples <= 64, "evaluation.examples", "must be in [1, 64]")


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        engine = self.engine
        if engine.strategy == "deepspeed" and engine.precision == "fp16" and engine.on_cpu:
            raise ConfigError("engine.precision: DeepSpeed refuses fp16 on CPU "
                              "('Type fp16 is not supported on your device'); use bf16 or fp32")
        if engine.zero_stage == 3 and self.model.resolved_saliency != "none":
            raise ConfigError(
                f"engine.deepspeed_config: ZeRO stage 3 ({engine.deepspeed_config}) cannot train "
                f"the saliency bridge (model.saliency={self.model.resolved_saliency}): DeepSpeed's "
                "ZeRO-3 parameter partitioning breaks the input gradient taken inside the forward "
                "(engine.backward fails in both saliency modes). Use ZeRO stage 0, 1 or 2 "
                "(configs/deepspeed/zero2.json) or model.saliency=none")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(f"{key}: {value!r} does not fit {_type_name(tp)} ({'; '.join(errors)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string: accept numeric text for float keys.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    path = f"{prefix}.{key}" if prefix else key
    hint = f"; did you mean {(prefix + '.' if prefix else '') + near[0]!r}?" if near else ""
    return ConfigError(f"{path}: unknown key{hint} (valid keys here: {', '.join(names)})")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints or key not in {f.name for f in dataclasses.fields(cls)}:
            raise _unknown_key(cls, str(key), prefix)
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        message = str(exc)
        # Sections validate with their own short names; prefix the path they live at.
        if prefix and not message.startswith(prefix):
            head = message.split(":", 1)[0]
            if "." not in head:
                message = f"{prefix}.{message}"
        raise ConfigError(message) from None


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_tree(path: str | Path) -> dict:
    """Read a config file and its ``base:`` chain into one nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml_tree(path.parent / base), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'trainer.max_steps=50'`` -> (['trainer', 'max_steps'], 50); values parse as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.split("."), value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    tree = dict(tree)
    for text in overrides:
        parts, value = parse_override(text)
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return tree


def from_dict(data: dict) -> Config:
    return _build(Config, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    tree = read_yaml_tree(path) if path is not None else {}
    return from_dict(apply_overrides(tree, list(overrides)))


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with load_config)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
