"""The ``losses`` section of the config tree: the paper's weights, and the semi-supervised
alternatives beside them (weak-to-strong segmentation consistency, pseudo-label thresholds,
distribution alignment). The paper's values are the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmdist.config.errors import check


@dataclass
class LossConfig:
    tau: float = 0.7
    """FixMatch confidence threshold for pseudo-labels (losses.threshold: fixed)."""
    lambda_u: float = 0.25
    """Weight of the FixMatch unlabeled loss."""
    lambda_d: float = 5.0
    """Weight of the Dice loss."""
    lambda_kl: float = 0.01
    """Weight of the segmentation consistency KL (labeled vs unlabeled predictions)."""
    kl: Literal["bernoulli", "reference"] = "bernoulli"
    """'bernoulli' is a real per-pixel foreground/background KL; 'reference' reproduces the authors'
    softmax over one channel, which is identically zero (kept only to reproduce their numbers)."""
    seg_unlabeled: Literal["kl", "w2s"] = "kl"
    """What the unlabeled segmentation images train: 'kl' the paper's consistency term (lambda_kl);
    'w2s' weak-to-strong consistency (UniMatch-style, mmdist.losses.w2s): confident pseudo-masks
    of the weak view train an appearance-perturbed, CutMix-ed strong view (w2s_* keys)."""
    w2s_weight: float = 1.0
    """Weight of the weak-to-strong loss (strong and feature streams averaged)."""
    w2s_threshold: float = 0.95
    """A pseudo-mask pixel trains only where the weak view's confidence max(p, 1-p) >= this."""
    w2s_feature_dropout: float = 0.0
    """Feature-perturbation stream: channel dropout with this p on the weak view's encoder
    features, trained on the same pseudo-mask (UniMatch uses 0.5; 0 = off)."""
    w2s_cutmix_p: float = 0.5
    """Probability that a strong view receives a CutMix box from another image of the batch."""
    w2s_appearance_p: float = 0.8
    """Probability of each appearance op in the strong view (mmdist.augment.policy.APPEARANCE)."""
    threshold: Literal["fixed", "freematch", "softmatch"] = "fixed"
    """Classifier pseudo-label weights: 'fixed' (tau, the paper), 'freematch' (self-adaptive
    global and class-wise threshold), 'softmatch' (truncated-Gaussian weights)."""
    threshold_momentum: float = 0.999
    """EMA momentum of the freematch/softmatch statistics and of dist_align's distributions."""
    dist_align: bool = False
    """Distribution alignment of the weak predictions toward the labeled class prior."""
    mixmatch_temperature: float = 0.5
    mixmatch_alpha: float = 0.75
    mixmatch_lambda_u: float = 75.0
    mixmatch_rampup_steps: int = 1000

    def __post_init__(self) -> None:
        check(0.0 <= self.tau <= 1.0, "losses.tau", "must be in [0, 1]")
        for name in ("lambda_u", "lambda_d", "lambda_kl", "mixmatch_lambda_u", "w2s_weight"):
            check(getattr(self, name) >= 0, f"losses.{name}", "must be >= 0")
        check(self.mixmatch_temperature > 0, "losses.mixmatch_temperature", "must be > 0")
        check(self.mixmatch_alpha > 0, "losses.mixmatch_alpha", "must be > 0")
        check(0.5 <= self.w2s_threshold <= 1.0, "losses.w2s_threshold",
              "must be in [0.5, 1] (a binary mask's confidence is at least 0.5)")
        check(0.0 <= self.w2s_feature_dropout < 1.0, "losses.w2s_feature_dropout",
              "must be in [0, 1) (0 = off)")
        for name in ("w2s_cutmix_p", "w2s_appearance_p"):
            check(0.0 <= getattr(self, name) <= 1.0, f"losses.{name}", "must be in [0, 1]")
        check(0.0 < self.threshold_momentum < 1.0, "losses.threshold_momentum", "must be in (0, 1)")
