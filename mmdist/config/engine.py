"""The engine section (strategy, precision, DeepSpeed JSON) and the DeepSpeed JSON checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from mmdist.config.errors import ConfigError, check

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class EngineConfig:
    strategy: Literal["auto", "single", "ddp", "deepspeed"] = "auto"
    """'auto': DDP when the launcher started several ranks, one process otherwise. 'single'
    under several ranks is refused at start (each rank would train alone)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tf32: bool = True
    """fp32 matmuls and convolutions on TF32 tensor cores on CUDA (Ampere and newer), the GPU
    default: several times faster, about 3 fewer significant digits (bf16 has fewer still).
    false: strict IEEE fp32. Applied with cuDNN's autotuner, off under trainer.deterministic
    (mmdist.engine.devices.configure_numerics; bench step applies the same)."""
    low_precision_reduce: bool = False
    """DeepSpeed under bf16/fp16: reduce the gradients of Linear/Conv weights in the autocast
    dtype (DeepSpeed's torch_autocast default: half the traffic, ~3 digits less). Off: every
    gradient is reduced in fp32, as under DDP."""
    deepspeed_config: Optional[str] = None
    """Path to a DeepSpeed JSON (configs/deepspeed/zero*.json); needed for strategy=deepspeed."""
    collective_timeout_s: float = 300.0
    """A rank waiting longer than this in a collective fails the job instead of hanging."""
    channels_last: bool = False
    """Keep activations NHWC (torch.channels_last). Off by default: on a 2-core CPU it made the
    128 px MultiMix step slower (1.37x with InstanceNorm; the one-group-per-channel GroupNorm
    that replaced it is also slower in NHWC there); worth trying on GPUs."""
    find_unused_parameters: Literal["auto", "true", "false"] = "auto"
    """DDP: 'auto' turns it on only for variants declared to leave parameters without gradients
    (mmdist.config.variants)."""

    max_skipped_in_a_row: int = 25
    """A step with a non-finite loss, saliency or gradient on any rank (or fp16 overflow) is
    skipped on every rank; this many in a row stop the run with one line (fp16's scale has then
    backed off 2**25-fold)."""

    def __post_init__(self) -> None:
        check(self.collective_timeout_s > 0, "engine.collective_timeout_s", "must be > 0")
        check(self.max_skipped_in_a_row >= 1, "engine.max_skipped_in_a_row", "must be >= 1")
        if self.low_precision_reduce:
            check(self.strategy == "deepspeed", "engine.low_precision_reduce",
                  "only engine.strategy=deepspeed reduces in low precision (DDP reduces in fp32)")
            check(self.precision != "fp32", "engine.low_precision_reduce",
                  "needs engine.precision bf16 or fp16 (under fp32 there is no lower precision)")
        if self.strategy == "deepspeed":
            check(self.deepspeed_config is not None, "engine.deepspeed_config",
                   "strategy=deepspeed needs a DeepSpeed JSON (e.g. configs/deepspeed/zero1.json)")
            settings = read_deepspeed_json(self.deepspeed_config)
            check_deepspeed_json(settings, self.deepspeed_config)
            stage = settings.get("zero_optimization", {}).get("stage", 0)
            # ZeRO-1/2 decide fp16 overflow before their optimizer step, and the autocast
            # GradScaler's step/update run only inside it: the scale would never back off from
            # 2**16 and a persistent overflow would skip every step (DeepSpeed 0.19 source).
            check(not (self.precision == "fp16" and stage in (1, 2)), "engine.precision",
                  f"fp16 with DeepSpeed ZeRO-{stage} ({self.deepspeed_config}) never backs its "
                  "loss scale off; use engine.precision=bf16, ZeRO stage 0 "
                  "(configs/deepspeed/zero0.json), or engine.strategy=ddp for fp16")

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
    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.is_file():
        beside_package = REPO_ROOT / candidate
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


def check_deepspeed_json(data: dict, path: str) -> None:
    """What the DeepSpeed JSON may say: ZeRO, clipping and communication; not what the training
    config already decides (precision, optimizer, schedule, batch)."""
    key = f"engine.deepspeed_config ({path})"
    check("gradient_clipping" in data, key,
           "set 'gradient_clipping' explicitly (DeepSpeed clips at 1.0 when it is absent; "
           "0.0 turns clipping off, as under DDP)")
    check(isinstance(data.get("gradient_clipping"), (int, float))
           and data["gradient_clipping"] >= 0, key, "'gradient_clipping' must be a number >= 0")
    for section in ("fp16", "bf16", "amp"):
        check(not (isinstance(data.get(section), dict) and data[section].get("enabled", False)),
               key, f"remove the '{section}' section: precision is engine.precision")
    check("torch_autocast" not in data, key,
          "remove the 'torch_autocast' section: precision is engine.precision, and gradients "
          "reduce in fp32 unless engine.low_precision_reduce=true")
    check(data.get("communication_data_type", "fp32") in ("fp32", "float32"), key,
          "remove 'communication_data_type': gradients reduce in fp32 unless "
          "engine.low_precision_reduce=true")
    for section, owner in (("optimizer", "the trainer's Adam (optim.*)"),
                           ("scheduler", "the trainer's StepLR (optim.lr_step_epochs)"),
                           ("train_batch_size", "data.global_batch_size or data.batch_size"),
                           ("train_micro_batch_size_per_gpu", "data.batch_size per rank")):
        check(section not in data, key, f"remove '{section}': it is set by {owner}")
    check(data.get("gradient_accumulation_steps", 1) == 1, key,
           "'gradient_accumulation_steps' must be 1 (the trainer steps after every batch)")
    zero = data.get("zero_optimization", {})
    check(isinstance(zero, dict) and zero.get("stage", 0) in (0, 1, 2, 3), key,
           "'zero_optimization.stage' must be 0, 1, 2 or 3")
