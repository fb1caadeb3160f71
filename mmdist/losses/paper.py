"""The paper's losses (eq. 1, 2, 5) plus MixMatch for the enc_mm baseline.

All functions take logits (never probabilities) unless the name says otherwise, and return a
scalar tensor; reductions are means over the batch (and pixels, where there are pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Losses are computed in at least float32 (autocast hands over fp16/bf16 logits).
from mmdist.model.saliency import at_least_fp32 as _fp32


def supervised_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (N, K) logits against (N,) int64 class indices."""
    return F.cross_entropy(_fp32(logits), targets)


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, tau: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch unlabeled loss: pseudo-labels from the weak view, CE on the strong view.

    weak_logits: (N, K), taken without gradient (detached here in any case).
    strong_logits: (N, K). tau: confidence threshold; a pseudo-label counts when its max
    probability is >= tau.
    Returns (loss = mean over all N of mask * CE, mask ratio = fraction of N kept).
    The weight lambda_u is applied by the caller.
    """
    probs = torch.softmax(_fp32(weak_logits.detach()), dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= tau).to(probs.dtype)
    return weighted_pseudo_ce(strong_logits, pseudo, mask), mask.mean()


def weighted_pseudo_ce(strong_logits: torch.Tensor, pseudo: torch.Tensor, weight: torch.Tensor
                       ) -> torch.Tensor:
    """Mean over all N of weight * CE(strong_logits, pseudo): (N, K) logits, (N,) int64 labels,
    (N,) float weights in [0, 1] (a 0/1 mask for hard thresholds, SoftMatch's soft weights)."""
    per_image = F.cross_entropy(_fp32(strong_logits), pseudo, reduction="none")
    return (per_image * weight.to(per_image.dtype)).mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, 1 - (2|P.T| + s) / (|P| + |T| + s), per image then averaged.

    probs: (N, 1, H, W) foreground probabilities; target: same shape, {0, 1}.
    """
    probs = _fp32(probs).flatten(1)
    target = target.to(probs.dtype).flatten(1)
    intersection = (probs * target).sum(1)
    dice = (2 * intersection + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return (1 - dice).mean()


def bernoulli_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel KL(Bern(p) || Bern(q)) between two mask predictions, averaged over pixels.

    p_logits, q_logits: (N, 1, H, W) mask logits; the batches are paired image by image, the
    shorter length wins (the paper pairs labeled with unlabeled predictions this way).
    Zero when the predictions agree, positive otherwise.
    """
    n = min(p_logits.shape[0], q_logits.shape[0])
    p_logits, q_logits = _fp32(p_logits[:n]), _fp32(q_logits[:n])
    log_p, log_not_p = F.logsigmoid(p_logits), F.logsigmoid(-p_logits)
    log_q, log_not_q = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    p = torch.sigmoid(p_logits)
    kl = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    return kl.mean()


def reference_softmax_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """The authors' segmentation KL: softmax over the single output channel. Identically zero
    (softmax of one logit is 1); reachable only through losses.kl=reference."""
    n = min(p_logits.shape[0], q_logits.shape[0])
    p_logits, q_logits = _fp32(p_logits[:n]), _fp32(q_logits[:n])
    p = torch.softmax(p_logits, dim=1)
    return (p * (torch.log_softmax(p_logits, 1) - torch.log_softmax(q_logits, 1))).mean()


# ---- MixMatch (Berthelot et al. 2019), for the enc_mm baseline -----------------------------

def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Lower the entropy of (N, K) probabilities: p^(1/T), renormalised."""
    powered = probs ** (1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def mixup_lambda(alpha: float) -> float:
    """lambda' = max(lambda, 1 - lambda) with lambda ~ Beta(alpha, alpha), drawn from torch's
    global generator (whose state checkpoints save, so a resumed run draws the same values)."""
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = float(beta.sample())
    return max(lam, 1.0 - lam)


def mixmatch_loss(labeled_logits: torch.Tensor, labeled_targets: torch.Tensor,
                  unlabeled_logits: torch.Tensor, unlabeled_targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch losses on mixed batches: soft-target CE on the labeled part, squared error of
    probabilities on the unlabeled part. Targets are (N, K) probability rows.
    Returns (labeled loss, unlabeled loss); the ramped weight is applied by the caller."""
    labeled = -(labeled_targets * F.log_softmax(_fp32(labeled_logits), dim=1)).sum(1).mean()
    unlabeled = ((torch.softmax(_fp32(unlabeled_logits), 1) - unlabeled_targets) ** 2).mean()
    return labeled, unlabeled


def linear_rampup(step: int, length: int) -> float:
    """0 -> 1 linearly over ``length`` steps (1 from the start when length is 0)."""
    if length <= 0:
        return 1.0
    return float(min(max(step / length, 0.0), 1.0))
