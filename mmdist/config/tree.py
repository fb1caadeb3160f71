"""The root of the config tree, and the checks that span sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mmdist.config.engine import EngineConfig
from mmdist.config.errors import ConfigError, check
from mmdist.config.evaluation import EvaluationConfig
from mmdist.config.sections import (DataConfig, LossConfig, ModelConfig, OptimConfig,
                                    TrainerConfig)
from mmdist.config.variants import VARIANTS

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
        if self.data.classification is None:
            check(not VARIANTS[self.model.variant].classifier, "data.classification",
                  f"variant {self.model.variant!r} trains a classifier and needs a "
                  "classification source")
        if self.data.global_batch_size is not None:
            check(self.optim.scale_lr == "none", "optim.scale_lr",
                  "must be 'none' with data.global_batch_size: the global batch is the same at "
                  "every rank count, so there is nothing to scale")
        spec = VARIANTS[self.model.variant]
        self.trainer.selection_metric(spec.classifier, spec.decoder)  # raises naming the key
        engine = self.engine
        if engine.zero_stage == 3 and self.model.ema_decay > 0:
            raise ConfigError("model.ema_decay: the weight average needs every rank's whole "
                              "parameters, which ZeRO stage 3 partitions; use stage 0, 1 or 2")
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
        for i, entry in enumerate(self.evaluation.cross_domain):
            check(entry.exclude != "unlabeled" or self.data.unlabeled is not None,
                  f"evaluation.cross_domain[{i}].exclude",
                  "'unlabeled' needs data.unlabeled (there is no separate pool to exclude)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
