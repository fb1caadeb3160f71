"""Mixed precision of the saliency's inner gradient under the engine's autocast.

The model's class scores are multiplied by a fixed small factor (model.saliency_inner_scale,
1024) before the inner gradient and divided after: fp16 input gradients of a model whose logit
gradients are small then neither flush to zero nor, as with the GradScaler's 2**16, overflow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmdist.config import ConfigError, ModelConfig, load_config
from mmdist.engine.precision import autocast
from mmdist.model import build_model
from mmdist.model.saliency import input_saliency

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def quiet_model():
    """A quarter-width MultiMix whose classifier weights are shrunk 10**6 times, so the class
    score's input gradient (~1e-10) sits below fp16's smallest subnormal (6e-8)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="multimix", width=0.25, dropout=0.0)).eval()
    with torch.no_grad():
        model.classifier.fc.weight.mul_(1e-6)
    return model


def saliency(model, precision: str, inner_scale: float) -> torch.Tensor:
    images = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with autocast(CPU, precision):
        _, _, out = input_saliency(images, model.encode, "detached", inner_scale)
    return out.float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_fp16_saliency_is_finite_and_not_flushed(quiet_model):
    torch.set_num_threads(1)
    reference = saliency(quiet_model, "fp32", 1.0)
    assert (reference > 0).float().mean() > 0.99
    scaled = saliency(quiet_model, "fp16", quiet_model.saliency_inner_scale)
    unscaled = saliency(quiet_model, "fp16", 1.0)
    assert quiet_model.saliency_inner_scale == 1024.0
    assert torch.isfinite(scaled).all()
    flushed_scaled = (scaled == 0).float().mean().item()
    flushed_unscaled = (unscaled == 0).float().mean().item()
    print(f"fp16 zeros: unscaled {flushed_unscaled:.4f}, scaled {flushed_scaled:.4f}; "
          f"cosine to fp32: unscaled {cosine(unscaled, reference):.4f}, "
          f"scaled {cosine(scaled, reference):.4f}")
    assert flushed_unscaled > 0.5  # the trap is real on this model...
    assert flushed_scaled < 0.01  # ... and the fixed inner scale avoids it
    assert cosine(scaled, reference) > 0.95
    # The GradScaler's scale (2**16) overflows the fp16 seed gradient: never use it here.
    assert not torch.isfinite(saliency(quiet_model, "fp16", 2.0**16)).all()


def test_bf16_saliency_is_finite_and_close(quiet_model):
    torch.set_num_threads(1)
    reference = saliency(quiet_model, "fp32", 1.0)
    got = saliency(quiet_model, "bf16", quiet_model.saliency_inner_scale)
    assert torch.isfinite(got).all()
    assert cosine(got, reference) > 0.85  # bf16's 8-bit mantissa, amplified by the input gradient


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_zero3_with_saliency_is_refused_at_load(tmp_path):
    zero3 = _write(tmp_path / "zero3.json", '{"zero_optimization": {"stage": 3}, '
                                            '"gradient_clipping": 0.0}')
    with pytest.raises(ConfigError, match="ZeRO stage 3.*saliency"):
        load_config(TINY, ["engine.strategy=deepspeed", f"engine.deepspeed_config={zero3}"])
    # Without a saliency bridge ZeRO-3 is allowed through.
    config = load_config(TINY, ["engine.strategy=deepspeed", "model.saliency=none",
                                f"engine.deepspeed_config={zero3}"])
    assert config.engine.zero_stage == 3


def test_fp16_on_cpu_deepspeed_is_refused_at_load():
    with pytest.raises(ConfigError, match="DeepSpeed refuses fp16 on CPU"):
        load_config(TINY, ["engine.strategy=deepspeed", "engine.device=cpu",
                           "engine.precision=fp16",
                           f"engine.deepspeed_config={REPO}/configs/deepspeed/zero0.json"])
    # The same on DDP is fine (CPU autocast runs fp16).
    load_config(TINY, ["engine.strategy=ddp", "engine.device=cpu", "engine.precision=fp16"])


@pytest.mark.parametrize("text, needle", [
    ('{"zero_optimization": {"stage": 1}}', "gradient_clipping"),
    ('{"gradient_clipping": 1.0, "bf16": {"enabled": true}}', "precision is engine.precision"),
    ('{"gradient_clipping": 1.0, "optimizer": {"type": "Adam"}}', "remove 'optimizer'"),
    ('{"gradient_clipping": 1.0, "gradient_accumulation_steps": 4}', "must be 1"),
    ('{"gradient_clipping": 1.0,', "not valid JSON"),
])
def test_bad_deepspeed_json_is_named(tmp_path, text, needle):
    path = _write(tmp_path / "ds.json", text)
    with pytest.raises(ConfigError, match="engine.deepspeed_config") as info:
        load_config(TINY, ["engine.strategy=deepspeed", f"engine.deepspeed_config={path}"])
    assert needle in str(info.value) and "ds.json" in str(info.value)


def test_shipped_deepspeed_configs_load():
    # Relative on purpose: found from the repository root whatever the working directory.
    for stage in (0, 1, 2):
        config = load_config(TINY, [
            "engine.strategy=deepspeed", f"engine.deepspeed_config=configs/deepspeed/zero{stage}.json"])
        assert config.engine.zero_stage == stage
