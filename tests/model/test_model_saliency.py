"""The saliency bridge: correct values, a real second-order path, and no leaks into .grad."""

import pytest
import torch

from mmdist import losses as L
from mmdist.config import ModelConfig
from mmdist.model import build_model


def tiny(saliency="detached", seed=0, variant="multimix"):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(variant=variant, saliency=saliency, width=0.125, dropout=0.0))
    return model.double()


def images(n=3, size=32, seed=1):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_matches_per_image_autograd_and_finite_differences():
    model = tiny()
    x = images()
    out = model(seg_images=x)
    for i in range(x.shape[0]):  # independent: one image at a time, its own gradient call
        xi = x[i:i + 1].clone().requires_grad_(True)
        score = model.encode(xi)[1].max(dim=1).values.sum()
        (expected,) = torch.autograd.grad(score, xi)
        torch.testing.assert_close(out.saliency[i:i + 1], expected.abs(), rtol=1e-10, atol=1e-12)

    # Central finite differences on a few pixels of image 0.
    def score_of(image):
        with torch.no_grad():
            logits = model.encode(image)[1]
            return logits.max(dim=1).values.sum().item()
    for (r, c) in [(5, 7), (16, 16), (30, 2)]:
        eps = 1e-6
        plus, minus = x[:1].clone(), x[:1].clone()
        plus[0, 0, r, c] += eps
        minus[0, 0, r, c] -= eps
        numeric = abs(score_of(plus) - score_of(minus)) / (2 * eps)
        assert out.saliency[0, 0, r, c].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def _seg_loss_grads(model, x, mask):
    model.zero_grad(set_to_none=True)
    out = model(seg_images=x)
    L.dice_loss(torch.sigmoid(out.seg_logits), mask).backward()
    encoder = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    decoder = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])
    return encoder, decoder


def test_differentiable_mode_adds_a_second_order_path_to_the_encoder():
    detached, differentiable = tiny("detached"), tiny("differentiable")
    differentiable.load_state_dict(detached.state_dict())
    x = images()
    mask = (torch.rand_like(x) > 0.5).double()
    enc_d, dec_d = _seg_loss_grads(detached, x, mask)
    enc_s, dec_s = _seg_loss_grads(differentiable, x, mask)
    # Same forward values, so the decoder sees the same gradients...
    torch.testing.assert_close(dec_d, dec_s, rtol=1e-10, atol=1e-14)
    # ...but the encoder also learns through the saliency in differentiable mode.
    assert (enc_d - enc_s).norm() > 1e-6 * enc_d.norm()
    # And the classifier head is reached only through the second-order path.
    differentiable.zero_grad(set_to_none=True)
    L.dice_loss(torch.sigmoid(differentiable(seg_images=x).seg_logits), mask).backward()
    assert differentiable.classifier.fc.weight.grad is not None
    assert differentiable.classifier.fc.weight.grad.abs().sum() > 0


def test_none_and_detached_give_the_same_classification_gradients():
    with_bridge, without = tiny("detached"), tiny("none")
    shared = {k: v for k, v in with_bridge.state_dict().items() if not k.startswith("decoder")}
    without.load_state_dict(shared, strict=False)
    cls_x, seg_x = images(4, seed=2), images(2, seed=3)
    targets = torch.tensor([0, 1, 1, 0])
    grads = []
    for model in (with_bridge, without):
        model.zero_grad(set_to_none=True)
        out = model(cls_images=cls_x, seg_images=seg_x)
        L.supervised_ce(out.cls_logits, targets).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    # The saliency's inner gradient must not leak into .grad (the .backward() trap).
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)


def test_works_in_eval_mode_and_under_no_grad():
    model = tiny()
    x = images()
    model.eval()
    expected = model(seg_images=x).saliency
    with torch.no_grad():
        out = model(seg_images=x)
    assert out.saliency.abs().sum() > 0
    torch.testing.assert_close(out.saliency, expected)
    assert not out.seg_logits.requires_grad


def test_inner_scale_does_not_change_the_map():
    model = tiny()
    x = images()
    reference = model(seg_images=x).saliency
    model.saliency_inner_scale = 1.0
    torch.testing.assert_close(model(seg_images=x).saliency, reference, rtol=1e-12, atol=0)
