"""Losses on hand-computed examples."""

import math

import numpy as np

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


# ---- weak-to-strong segmentation consistency (mmdist.losses.w2s) ----------------------------
from mmdist.config import LossConfig  # noqa: E402
from mmdist.losses import w2s as W  # noqa: E402


def test_a_pseudo_mask_pixel_below_the_threshold_contributes_nothing():
    torch.manual_seed(0)
    weak = torch.randn(2, 1, 8, 8) * 3  # confidences spread over [0.5, 1)
    strong = torch.randn(2, 1, 8, 8, requires_grad=True)
    pseudo, confidence = W.pseudo_masks(weak)
    loss, kept = W.masked_pseudo_bce(strong, pseudo, confidence, 0.9)
    loss.backward()
    below = confidence < 0.9
    assert below.any() and (~below).any()
    assert torch.all(strong.grad[below] == 0)  # neither gradient ...
    assert torch.all(strong.grad[~below] != 0)
    moved = strong.detach().clone()
    moved[below] += 100.0  # ... nor loss, whatever the strong view predicts there
    assert W.masked_pseudo_bce(moved, pseudo, confidence, 0.9)[0] == pytest.approx(loss.item())
    assert kept.item() == pytest.approx((~below).float().mean().item())
    # The mean is over all pixels (UniMatch): a kept pixel's BCE divided by the pixel count.
    bce = torch.nn.functional.binary_cross_entropy_with_logits(strong.detach(), pseudo, reduction="none")
    assert loss.item() == pytest.approx(bce[~below].sum().item() / bce.numel(), rel=1e-5)


def test_cutmix_moves_the_pseudo_mask_with_the_image():
    """Image i is the constant c_i; the weak view says images 0 and 2 are all foreground, 1 and 3
    all background. A strong prediction that is right pixel by pixel for the image content it
    shows has (almost) no loss only if the target was mixed with the same boxes."""
    torch.manual_seed(3)
    config = LossConfig(w2s_cutmix_p=1.0, w2s_appearance_p=0.0)
    values = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    weak = values[:, None, None, None].expand(4, 1, 32, 32).clone()
    views = W.strong_views(weak, config)
    assert views.box.any(dim=(1, 2, 3)).all()  # p = 1: every image got a box
    foreground = torch.tensor([True, False, True, False])
    # Each strong pixel shows exactly one source image, whose value says which.
    source = (views.images[..., None] - values).abs().argmin(-1)
    assert torch.equal(source, torch.where(views.box, views.partner[:, None, None, None],
                                           torch.arange(4)[:, None, None, None]))
    weak_logits = torch.where(foreground, 8.0, -8.0)[:, None, None, None].expand(4, 1, 32, 32)
    right = torch.where(foreground[source], 8.0, -8.0)
    terms = W.w2s_losses(right, weak_logits, views, None, threshold=0.95)
    assert terms["w2s"].item() < 1e-3 and terms["w2s_kept"].item() == 1.0
    unmixed = W.StrongViews(views.images, torch.zeros_like(views.box), views.partner)
    assert W.w2s_losses(right, weak_logits, unmixed, None, 0.95)["w2s"].item() > 0.1


def test_cutmix_boxes_follow_unimatch_sizes_and_p():
    torch.manual_seed(0)
    boxes = W.cutmix_boxes(400, 64, p=1.0)
    area = boxes.float().mean(dim=(1, 2, 3))
    assert area.min() >= 0.015 and area.max() <= 0.41  # 2-40 % of the image, floored sides
    assert 0.17 < area.mean() < 0.25  # uniform area: mean near 21 %
    assert not W.cutmix_boxes(50, 64, p=0.0).any()


def test_strong_view_without_perturbation_is_the_weak_view_and_the_fp_stream_averages():
    weak = torch.rand(3, 1, 32, 32) * 2 - 1
    views = W.strong_views(weak, LossConfig(w2s_cutmix_p=0.0, w2s_appearance_p=0.0))
    assert torch.allclose(views.images, weak, atol=1e-6)
    logits, weak_logits, fp = (torch.randn(3, 1, 32, 32) * 4 for _ in range(3))
    terms = W.w2s_losses(logits, weak_logits, views, fp, threshold=0.6)
    assert terms["w2s"].item() == pytest.approx((terms["w2s_strong"] + terms["w2s_fp"]).item() / 2)


# ---- pseudo-label thresholds and distribution alignment (mmdist.losses.pseudo_label) ---------
CONFIDENCE_SEQUENCE = [  # three steps of made-up weak-view probabilities, 3 classes
    [[0.9, 0.05, 0.05], [0.2, 0.65, 0.15], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8]],
    [[0.6, 0.3, 0.1], [0.05, 0.9, 0.05], [0.34, 0.33, 0.33], [0.2, 0.2, 0.6]],
    [[0.99, 0.005, 0.005], [0.5, 0.45, 0.05], [0.1, 0.85, 0.05], [0.3, 0.3, 0.4]],
]


def test_freematch_threshold_follows_its_definition():
    """FreeMatch eq. 4-6, by hand: tau_t = m tau + (1-m) mean max q; p_t = m p + (1-m) mean q;
    class threshold p_t(c) / max p_t * tau_t; a prediction is kept when max q >= its class's."""
    m, k = 0.7, 3
    labeler = L.PseudoLabeler("freematch", momentum=m, num_classes=k)
    tau, p = 1.0 / k, np.full(k, 1.0 / k)
    for step in CONFIDENCE_SEQUENCE:
        q = np.array(step)
        tau = m * tau + (1 - m) * q.max(1).mean()
        p = m * p + (1 - m) * q.mean(0)
        class_tau = p / p.max() * tau
        expected = (q.max(1) >= class_tau[q.argmax(1)]).astype(np.float32)
        pseudo, weight, terms = labeler(torch.tensor(q).log().float())
        labeler.commit()
        assert pseudo.tolist() == q.argmax(1).tolist()
        assert weight.tolist() == expected.tolist()
        assert labeler.tau.item() == pytest.approx(tau, rel=1e-5)
        assert labeler.p_model.numpy() == pytest.approx(p, rel=1e-5)
        assert terms["threshold"].item() == pytest.approx(class_tau.mean(), rel=1e-5)
    # Adaptive: early on (tau near 1/C) it keeps a 0.65-confident prediction a fixed 0.7 drops.
    first = L.PseudoLabeler("freematch", momentum=m, num_classes=k)
    assert first(torch.tensor(CONFIDENCE_SEQUENCE[0]).log())[1][1].item() == 1.0


def test_softmatch_weight_is_a_truncated_gaussian_of_the_running_confidence():
    m = 0.5
    labeler = L.PseudoLabeler("softmatch", momentum=m, num_classes=3)
    q = np.array(CONFIDENCE_SEQUENCE[0])
    _, weight, _ = labeler(torch.tensor(q).log().float())
    labeler.commit()
    conf = q.max(1)
    mu = m / 3 + (1 - m) * conf.mean()
    var = m * 1.0 + (1 - m) * conf.var(ddof=1)
    expected = np.where(conf >= mu, 1.0, np.exp(-(conf - mu) ** 2 / (2 * var / 4)))
    assert weight.numpy() == pytest.approx(expected, rel=1e-5)
    assert labeler.mu.item() == pytest.approx(mu) and labeler.var.item() == pytest.approx(var)


def test_distribution_alignment_moves_predictions_toward_the_labeled_prior():
    labeler = L.PseudoLabeler("fixed", tau=0.0, dist_align=True, momentum=0.9, num_classes=2)
    # The model predicts class 0 for everything; the labeled batch is 3:1 for class 1.
    q = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.9, 0.1]])
    targets = torch.tensor([1, 1, 1, 0])
    pseudo, _, _ = labeler(q.log(), targets)
    labeler.commit()
    target = (np.array([1, 3]) + 1) / 6  # add-one smoothed class frequency
    aligned = q.numpy() * target / q.numpy().mean(0)
    aligned /= aligned.sum(1, keepdims=True)
    assert pseudo.tolist() == aligned.argmax(1).tolist() == [1, 1, 1, 0]  # raw argmax: all 0
    assert labeler.da_target.numpy() == pytest.approx(target)
    # The next batch updates both by EMA (momentum 0.9).
    labeler(q.log(), torch.tensor([0, 0, 0, 0]))
    labeler.commit()
    assert labeler.da_target.numpy() == pytest.approx(0.9 * target + 0.1 * np.array([5, 1]) / 6)


@pytest.mark.parametrize("threshold, dist_align", [("freematch", True), ("softmatch", False),
                                                   ("fixed", True)])
def test_a_step_with_non_finite_weak_logits_is_skipped_and_leaves_the_state_as_it_was(
        threshold, dist_align):
    """A NaN or inf weak logit makes every weight NaN (so the loss, and the engine skips the
    step); the state it would have poisoned is discarded, bit for bit. A normal step moves it."""
    labeler = L.PseudoLabeler(threshold, momentum=0.9, dist_align=dist_align, num_classes=3)
    targets = torch.tensor([0, 1, 2])
    labeler(torch.tensor(CONFIDENCE_SEQUENCE[0]).log(), targets)
    labeler.commit()
    before = labeler.state_dict()
    for bad in (float("nan"), float("inf")):
        logits = torch.tensor(CONFIDENCE_SEQUENCE[1]).log()
        logits[2, 1] = bad  # one entry of one image
        _, weight, _ = labeler(logits, targets)
        assert torch.isnan(weight).all()
        strong = torch.zeros(4, 3)
        assert not torch.isfinite(L.weighted_pseudo_ce(strong, torch.zeros(4, dtype=torch.long),
                                                       weight))
        labeler.discard()
        for name, tensor in labeler.state_dict().items():
            assert torch.equal(tensor, before[name]), (bad, name)
    _, weight, _ = labeler(torch.tensor(CONFIDENCE_SEQUENCE[1]).log(), targets)
    assert torch.isfinite(weight).all()
    labeler.commit()
    after = labeler.state_dict()
    assert int(after["updates"]) == 2
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert moved and moved != ["updates"], moved


def test_a_proposed_state_must_be_committed_or_discarded_before_the_next_step():
    labeler = L.PseudoLabeler("freematch", num_classes=3)
    logits = torch.tensor(CONFIDENCE_SEQUENCE[0]).log()
    labeler(logits)
    assert int(labeler.updates) == 0  # proposed, not yet kept
    with pytest.raises(RuntimeError, match="neither committed nor discarded"):
        labeler(logits)


def test_threshold_state_round_trips_exactly():
    a = L.PseudoLabeler("freematch", momentum=0.9, dist_align=True, num_classes=3)
    for step in CONFIDENCE_SEQUENCE[:2]:
        a(torch.tensor(step).log(), torch.tensor([0, 1, 2]))
        a.commit()
    b = L.PseudoLabeler("freematch", momentum=0.9, dist_align=True, num_classes=3)
    b.load_state_dict(a.state_dict())
    last = torch.tensor(CONFIDENCE_SEQUENCE[2]).log()
    wa, wb = a(last, torch.tensor([1]))[1], b(last, torch.tensor([1]))[1]
    a.commit(), b.commit()
    assert torch.equal(wa, wb)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    fresh = L.PseudoLabeler("freematch", momentum=0.9, dist_align=True, num_classes=3)
    fresh(last, torch.tensor([1]))
    fresh.commit()
    assert not torch.equal(fresh.tau, a.tau)  # the state is what made the difference
