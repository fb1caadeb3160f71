"""Losses on hand-computed examples."""

import math

import pytest
import torch

from mmdist import losses as L


def logits_with_confidence(p):
    """Two-class logits whose softmax max is exactly p (class 1)."""
    return torch.tensor([[0.0, math.log(p / (1 - p))]])


@pytest.mark.parametrize("confidence, kept", [(0.69, 0.0), (0.7, 1.0), (0.71, 1.0), (0.5, 0.0)])
def test_fixmatch_mask_at_and_around_the_threshold(confidence, kept):
    weak = logits_with_confidence(confidence).double()
    # float rounding at exactly tau: build the boundary case from the float value itself
    tau = torch.softmax(weak.float(), 1).max().item() if confidence == 0.7 else 0.7
    strong = torch.tensor([[2.0, -1.0]])
    loss, ratio = L.fixmatch_loss(weak.float(), strong, tau)
    assert ratio.item() == kept
    expected_ce = -torch.log_softmax(strong, 1)[0, 1].item()  # pseudo-label is class 1
    assert loss.item() == pytest.approx(kept * expected_ce, rel=1e-6)


def test_fixmatch_mean_is_over_the_whole_batch_and_weak_view_gets_no_gradient():
    weak = torch.tensor([[0.0, 3.0], [0.1, 0.0]], requires_grad=True)  # conf 0.95, 0.52
    strong = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss, ratio = L.fixmatch_loss(weak, strong, 0.7)
    assert ratio.item() == 0.5
    ce_first = -torch.log_softmax(strong.detach(), 1)[0, 1].item()
    assert loss.item() == pytest.approx(ce_first / 2, rel=1e-6)
    loss.backward()
    assert weak.grad is None and strong.grad is not None


def test_dice_loss_of_identical_masks_is_zero_and_disjoint_is_near_one():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    assert L.dice_loss(mask, mask).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.zeros_like(mask)
    other[:, :, 6:, 6:] = 1
    # 1 - (0 + 1) / (16 + 4 + 1) with smooth = 1
    assert L.dice_loss(other, mask).item() == pytest.approx(1 - 1 / 21, rel=1e-6)


def test_dice_loss_by_hand_half_overlap():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    pred[..., :2, :] = 1      # 8 pixels
    target[..., 1:3, :] = 1   # 8 pixels, 4 shared
    assert L.dice_loss(pred, target, smooth=0.0).item() == pytest.approx(1 - 8 / 16)


def test_bernoulli_kl_zero_when_equal_positive_otherwise_and_matches_formula():
    a = torch.randn(2, 1, 5, 5)
    assert L.bernoulli_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    b = a + 1.0
    assert L.bernoulli_kl(a, b).item() > 0
    p, q = torch.sigmoid(torch.tensor(0.3)), torch.sigmoid(torch.tensor(-1.2))
    expected = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    value = L.bernoulli_kl(torch.full((1, 1, 2, 2), 0.3), torch.full((1, 1, 2, 2), -1.2))
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_reference_kl_is_identically_zero():
    assert L.reference_softmax_kl(torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)).item() == 0.0


def test_supervised_ce_by_hand():
    logits = torch.tensor([[1.0, 0.0]])
    assert L.supervised_ce(logits, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.e ** -1))


def test_mixmatch_parts():
    probs = torch.tensor([[0.6, 0.4]])
    sharp = L.sharpen(probs, 0.5)
    assert sharp[0, 0].item() == pytest.approx(0.36 / (0.36 + 0.16))
    torch.manual_seed(0)
    assert all(0.5 <= L.mixup_lambda(0.75) <= 1.0 for _ in range(20))
    logits = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]])
    lx, lu = L.mixmatch_loss(logits, target, logits, target)
    assert lx.item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 0].item())
    p = torch.softmax(logits, 1)
    assert lu.item() == pytest.approx(((p - target) ** 2).mean().item())
    assert L.linear_rampup(5, 10) == 0.5 and L.linear_rampup(50, 10) == 1.0
