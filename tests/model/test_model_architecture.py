"""Architecture: the paper's Appendix A shapes and parameter counts for the nine variants."""

import pytest
import torch

from mmdist.config import ModelConfig
from mmdist.model import VARIANTS, build_model

# Counted by hand from Appendix A: encoder 1,178,480; Linear(256, 2) 514; decoder 786,161 with the
# +2 bridge channels (2 * 9 * 128 = 2,304 fewer without them).
EXPECTED_PARAMS = {
    "multimix": 1_965_155, "umtl_s": 1_965_155, "umtl_ssl_s": 1_965_155,
    "umtl": 1_965_155 - 2_304, "umtl_ssl": 1_965_155 - 2_304,
    "unet": 1_965_155 - 2_304 - 514,
    "enc": 1_178_994, "enc_ssl": 1_178_994, "enc_mm": 1_178_994,
    "unet_w2s": 1_965_155 - 2_304 - 514,  # the U-Net; only its training differs
}
PAPER = {"multimix", "umtl_s", "umtl_ssl_s", "umtl", "umtl_ssl", "unet", "enc", "enc_ssl", "enc_mm"}


def test_variant_table_has_the_nine_paper_models_and_the_baselines_beyond():
    assert set(VARIANTS) == set(EXPECTED_PARAMS) and PAPER <= set(VARIANTS)
    assert all(VARIANTS[v].seg_unlabeled is None for v in PAPER)  # the paper's follow the config


@pytest.mark.parametrize("variant", sorted(EXPECTED_PARAMS))
def test_parameter_count(variant):
    model = build_model(ModelConfig(variant=variant))
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[variant]


def test_saliency_none_on_multimix_drops_the_bridge_channels():
    model = build_model(ModelConfig(variant="multimix", saliency="none"))
    assert sum(p.numel() for p in model.parameters()) == 1_965_155 - 2_304


@pytest.mark.parametrize("size", [32, 64, 96])
def test_output_shapes(size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="multimix", width=0.25))
    cls = torch.randn(3, 1, size, size)
    seg = torch.randn(2, 1, size, size)
    out = model(cls_images=cls, seg_images=seg, pseudo_images=cls)
    assert out.cls_logits.shape == (3, 2)
    assert out.pseudo_logits.shape == (3, 2) and not out.pseudo_logits.requires_grad
    assert out.seg_logits.shape == (2, 1, size, size)
    assert out.saliency.shape == (2, 1, size, size) and (out.saliency >= 0).all()
    assert out.seg_cls_logits.shape == (2, 2)


def test_heads_a_variant_lacks_are_refused():
    unet = build_model(ModelConfig(variant="unet", width=0.25))
    with pytest.raises(ValueError, match="no classifier"):
        unet(cls_images=torch.zeros(1, 1, 32, 32))
    enc = build_model(ModelConfig(variant="enc", width=0.25))
    with pytest.raises(ValueError, match="no decoder"):
        enc(seg_images=torch.zeros(1, 1, 32, 32))
    assert unet(seg_images=torch.zeros(1, 1, 32, 32)).saliency is None


def test_width_multiplier_scales_channels():
    small = build_model(ModelConfig(variant="multimix", width=0.5))
    assert small.encoder.blocks[0][0].out_channels == 8
    assert small.encoder.blocks[-1][0].out_channels == 128
