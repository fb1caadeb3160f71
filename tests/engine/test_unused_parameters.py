"""DDP's find_unused_parameters is the trainer's decision, not the engine's: 'auto' takes the
variant table's declaration (VariantSpec.unused_parameters), and a probe step of every variant,
in every saliency mode it allows and with either unlabeled segmentation loss, leaves exactly the
declared parameters without a gradient (none: the model builds only the heads a variant trains).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdist.config import EngineConfig, LossConfig, ModelConfig
from mmdist.data.step_batch import StepBatch
from mmdist.engine.step import training_losses
from mmdist.engine.trainer import find_unused_parameters
from mmdist.model import VARIANTS, build_model

LOSSES = {"kl": LossConfig(),
          "w2s": LossConfig(seg_unlabeled="w2s", w2s_feature_dropout=0.5)}


def unused_parameters(model: nn.Module, spec, losses: LossConfig) -> list[str]:
    """Names of the parameters one training step (2 random 32 px images per stream) leaves
    without a gradient."""
    generator = torch.Generator().manual_seed(0)
    batch = StepBatch()
    for name in spec.streams:
        setattr(batch, name, torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1)
    if batch.seg_labeled is not None:
        batch.seg_labeled_mask = (torch.rand(2, 1, 32, 32, generator=generator) > 0.5).float()
    if batch.cls_labeled is not None:
        batch.cls_labeled_target = torch.tensor([0, 1])
    model.zero_grad(set_to_none=True)
    loss, _ = training_losses(model, batch, spec, losses, step=1)
    loss.backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def saliency_modes(spec) -> tuple[str, ...]:
    both = spec.classifier and spec.decoder
    return ("none", "detached", "differentiable") if both else ("none",)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_declares_the_parameters_a_step_leaves_without_gradient(variant: str):
    torch.manual_seed(0)
    spec = VARIANTS[variant]
    # w2s changes the step only for variants that train on unlabeled segmentation images
    loss_names = {spec.unlabeled_seg_loss(losses) or "kl" for losses in LOSSES.values()}
    for saliency in saliency_modes(spec):
        for loss_name in sorted(loss_names):
            losses = LOSSES[loss_name]
            model = build_model(ModelConfig(variant=variant, saliency=saliency, width=0.25))
            unused = unused_parameters(model, spec, losses)
            assert bool(unused) == spec.unused_parameters, (saliency, loss_name, unused)


def test_the_probe_sees_a_parameter_no_loss_reaches():
    model = build_model(ModelConfig(variant="multimix", width=0.25))
    model.register_parameter("spare", nn.Parameter(torch.zeros(1)))
    assert unused_parameters(model, VARIANTS["multimix"], LossConfig()) == ["spare"]


def test_auto_takes_the_variant_table_and_true_false_override_it():
    for spec in VARIANTS.values():
        assert find_unused_parameters(EngineConfig(), spec) is spec.unused_parameters
    declared = VARIANTS["multimix"].__class__(**{**vars(VARIANTS["multimix"]),
                                                  "unused_parameters": True})
    assert find_unused_parameters(EngineConfig(), declared) is True
    for spec in (VARIANTS["multimix"], declared):
        assert find_unused_parameters(EngineConfig(find_unused_parameters="true"), spec) is True
        assert find_unused_parameters(EngineConfig(find_unused_parameters="false"), spec) is False
