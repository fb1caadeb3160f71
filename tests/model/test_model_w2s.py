"""The model's weak-to-strong inputs: the weak views' pseudo-mask logits come without gradient,
the feature-perturbation stream decodes the same encoder pass after channel dropout, and the
saliency bridge of a (mixed) strong view is that image's own saliency."""

import torch

from mmdist.config import ModelConfig
from mmdist.model import build_model
from mmdist.model.saliency import input_saliency


def model(variant="multimix", **kwargs):
    torch.manual_seed(0)
    return build_model(ModelConfig(variant=variant, width=0.25, **kwargs))


def test_weak_logits_carry_no_gradient_and_the_feature_stream_does():
    net = model().train()
    weak = torch.randn(2, 1, 32, 32)
    out = net(seg_weak_images=weak, feature_dropout=0.5)
    assert not out.seg_weak_logits.requires_grad and out.seg_fp_logits.requires_grad
    out.seg_fp_logits.sum().backward()
    # The feature stream trains the encoder too (UniMatch's perturbed stream is not detached).
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert net(seg_weak_images=weak).seg_fp_logits is None  # feature_dropout 0: no stream


def test_feature_stream_is_the_weak_pass_with_dropped_features():
    net = model("unet_w2s")
    weak = torch.randn(2, 1, 32, 32)
    net.eval()  # dropout off: the perturbed stream is the clean one, the weak logits the plain pass
    out = net(seg_weak_images=weak, feature_dropout=0.5)
    plain = net(seg_images=weak).seg_logits
    assert torch.allclose(out.seg_weak_logits, plain, atol=1e-6)
    assert torch.allclose(out.seg_fp_logits, plain, atol=1e-6)
    net.train()
    torch.manual_seed(1)
    out = net(seg_weak_images=weak, feature_dropout=0.5)
    assert (out.seg_fp_logits - out.seg_weak_logits).abs().max() > 1e-3  # perturbed


def test_the_bridge_sees_the_mixed_images_own_saliency():
    net = model("multimix", saliency="detached").eval()
    mixed = torch.randn(3, 1, 32, 32)
    out = net(seg_images=mixed)
    _, _, expected = input_saliency(mixed, net.encode, "detached", net.saliency_inner_scale)
    assert torch.allclose(out.saliency, expected)
    # With the weak views in the same forward, the strong views' saliency is unchanged.
    both = net(seg_images=mixed, seg_weak_images=torch.randn(3, 1, 32, 32))
    assert torch.allclose(both.saliency, expected) and both.seg_weak_logits is not None
