"""The network's own layers equal torch's reference layers: the one-group-per-channel norm is
InstanceNorm, the pointwise head is a 1x1 convolution, and WordDropout is dropout."""

import pytest
import torch
import torch.nn.functional as F

from mmdist.model.blocks import InstanceNorm, PointwiseConv, WordDropout


def test_instance_norm_equals_torchs_in_value_and_gradient():
    x = torch.randn(3, 8, 16, 16, dtype=torch.float64, requires_grad=True)
    ours = InstanceNorm(8)(x)
    theirs = F.instance_norm(x)
    assert torch.allclose(ours, theirs, atol=1e-12)
    g = torch.randn_like(ours)
    (ours_grad,) = torch.autograd.grad(ours, x, g, create_graph=True)
    (theirs_grad,) = torch.autograd.grad(theirs, x, g, create_graph=True)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-10)
    # Second order (the differentiable saliency): the gradient of the gradient agrees too.
    h = torch.randn_like(x)
    (ours_second,) = torch.autograd.grad((ours_grad * h).sum(), x)
    (theirs_second,) = torch.autograd.grad((theirs_grad * h).sum(), x)
    assert torch.allclose(ours_second, theirs_second, atol=1e-9)
    assert not list(InstanceNorm(8).state_dict())  # no parameters, no running statistics


def test_instance_norm_keeps_low_precision_inputs_in_their_dtype():
    x = torch.randn(2, 4, 8, 8).to(torch.float16)
    out = InstanceNorm(4)(x)
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), F.instance_norm(x.float()), atol=2e-3)


def test_pointwise_head_equals_a_1x1_convolution():
    torch.manual_seed(0)
    head = PointwiseConv(16, 1).double()
    x = torch.randn(4, 16, 9, 7, dtype=torch.float64, requires_grad=True)
    ours = head(x)
    theirs = F.conv2d(x, head.weight, head.bias)
    assert torch.allclose(ours, theirs, atol=1e-12)
    grads = torch.autograd.grad(ours.sum(), (x, head.weight, head.bias))
    expected = torch.autograd.grad(theirs.sum(), (x, head.weight, head.bias))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, expected))
    assert set(head.state_dict()) == {"weight", "bias"}  # loads an nn.Conv2d(16, 1, 1)'s


def test_word_dropout_drops_with_probability_p_and_scales_the_rest():
    torch.manual_seed(1)
    layer = WordDropout(0.25).train()
    x = torch.full((1000, 1000), 2.0)
    y = layer(x)
    kept = y != 0
    assert torch.all(y[kept] == 2.0 / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.002  # 1e6 draws: sd 0.0004
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(WordDropout(0.0).train()(x), x)


def test_word_dropout_gradient_is_its_mask_and_the_generator_decides():
    layer = WordDropout(0.5).train()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    torch.manual_seed(7)
    y = layer(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, (y != 0).float() * 2.0)
    torch.manual_seed(7)
    assert torch.equal(layer(x), y)  # the global generator (seeded per rank) decides the mask
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_word_dropout_refuses_an_impossible_probability():
    with pytest.raises(ValueError, match="dropout probability"):
        WordDropout(1.0)
