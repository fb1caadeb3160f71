"""Training losses: the paper's (mmdist.losses.paper), weak-to-strong segmentation consistency
(mmdist.losses.w2s) and the classifier's pseudo-label thresholds and distribution alignment
(mmdist.losses.pseudo_label). ``from mmdist import losses as L`` reaches all of them."""

from mmdist.losses.paper import (bernoulli_kl, dice_loss, fixmatch_loss, linear_rampup,
                                 mixmatch_loss, mixup_lambda, reference_softmax_kl, sharpen,
                                 supervised_ce, weighted_pseudo_ce)
from mmdist.losses.pseudo_label import PseudoLabeler, build_pseudo_labeler

__all__ = ["PseudoLabeler", "bernoulli_kl", "build_pseudo_labeler", "dice_loss", "fixmatch_loss",
           "linear_rampup", "mixmatch_loss", "mixup_lambda", "reference_softmax_kl", "sharpen",
           "supervised_ce", "weighted_pseudo_ce"]
