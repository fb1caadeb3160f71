"""Weak-to-strong consistency on the unlabeled segmentation images (losses.seg_unlabeled: w2s).

After UniMatch (Yang et al., CVPR 2023), with one binary output channel:
- the weak view is the data stream's image (flip and crop); its prediction, without gradient,
  gives the pseudo-mask (p >= 0.5) and the pixel's confidence max(p, 1 - p);
- the strong view is the weak view after the appearance chain (mmdist.augment.policy.APPEARANCE,
  each op with p = losses.w2s_appearance_p) and, with p = losses.w2s_cutmix_p, a CutMix box from
  the previous image of the batch (UniMatch's box: area 2-40 % of the image, aspect 0.3-3.3);
  the pseudo-mask and the confidence are mixed with the same box, so the target follows the pixels;
- the feature stream (losses.w2s_feature_dropout > 0) decodes the weak view's encoder features
  after channel dropout (UniMatch's Dropout2d(0.5)) against the weak pseudo-mask;
- each stream's loss is the per-pixel binary cross-entropy where the confidence is >=
  losses.w2s_threshold, zero elsewhere, averaged over all pixels (UniMatch's normalisation); the
  two streams are averaged, as UniMatch weighs its strong and feature streams.

The saliency bridge, when the model has it, sees each image's own saliency: the mixed strong view's
through the same encoder pass that segments it (a mixed image is an image like any other to the
classifier), the weak view's through the weak pass.

Random draws (appearance, boxes) come from torch's global generator on the CPU, whose state
checkpoints save per rank, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmdist.augment.draws import draw_appearance
from mmdist.augment.torch_backend import apply_appearance
from mmdist.model.saliency import at_least_fp32

BOX_AREA = (0.02, 0.4)
BOX_ASPECT = (0.3, 1 / 0.3)


@dataclass
class StrongViews:
    """images: (N, 1, H, W) float model input (the strong views, mixed); box: (N, 1, H, W) bool,
    True where image i shows image ``partner[i]``; partner: (N,) int64."""

    images: torch.Tensor
    box: torch.Tensor
    partner: torch.Tensor

    def mix(self, per_image: torch.Tensor) -> torch.Tensor:
        """Mix a (N, 1, H, W) per-pixel quantity (pseudo-mask, confidence) as the images were."""
        return torch.where(self.box, per_image[self.partner], per_image)


def cutmix_boxes(count: int, size: int, p: float) -> torch.Tensor:
    """(count, 1, size, size) bool boxes, all False for an image whose coin (p) is off. Area
    uniform in BOX_AREA of the image, aspect h/w uniform in BOX_ASPECT, position uniform over the
    places where the box fits (UniMatch's rejection loop, drawn directly)."""
    on = torch.rand(count) < p
    area = (BOX_AREA[0] + torch.rand(count) * (BOX_AREA[1] - BOX_AREA[0])) * size * size
    aspect = BOX_ASPECT[0] + torch.rand(count) * (BOX_ASPECT[1] - BOX_ASPECT[0])
    width = (area / aspect).sqrt().floor().clamp(1, size).long()
    height = (area * aspect).sqrt().floor().clamp(1, size).long()
    left = (torch.rand(count) * (size - width + 1)).floor().long()
    top = (torch.rand(count) * (size - height + 1)).floor().long()
    grid = torch.arange(size)
    cols = (grid >= left[:, None]) & (grid < (left + width)[:, None])
    rows = (grid >= top[:, None]) & (grid < (top + height)[:, None])
    box = rows[:, :, None] & cols[:, None, :] & on[:, None, None]
    return box[:, None]


def strong_views(weak: torch.Tensor, loss_config) -> StrongViews:
    """Strong views of (N, 1, H, W) weak model input in [-1, 1]: appearance chain, then CutMix
    with the previous image of the batch (the image itself when N = 1, i.e. no mix)."""
    count, size = weak.shape[0], weak.shape[-1]
    draws = draw_appearance(None, count, size, loss_config.w2s_appearance_p)
    u = apply_appearance((at_least_fp32(weak.detach()) + 1) / 2, draws)
    images = (u * 2 - 1).to(weak.dtype)
    box = cutmix_boxes(count, size, loss_config.w2s_cutmix_p).to(weak.device)
    partner = torch.roll(torch.arange(count), 1).to(weak.device)
    views = StrongViews(images=images, box=box, partner=partner)
    views.images = views.mix(images)
    return views


def pseudo_masks(weak_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) weak logits -> (pseudo-mask float {0, 1}, confidence max(p, 1 - p)), no grad."""
    p = torch.sigmoid(at_least_fp32(weak_logits.detach()).float())
    return (p >= 0.5).float(), torch.maximum(p, 1 - p)


def masked_pseudo_bce(logits: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor,
                      threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over all pixels of BCE(logits, pseudo) where confidence >= threshold (0 elsewhere:
    such a pixel contributes neither loss nor gradient). Returns (loss, fraction of pixels kept)."""
    keep = (confidence >= threshold).float()
    per_pixel = F.binary_cross_entropy_with_logits(at_least_fp32(logits).float(), pseudo,
                                                   reduction="none")
    return (per_pixel * keep).mean(), keep.mean()


def w2s_losses(strong_logits: torch.Tensor, weak_logits: torch.Tensor, views: StrongViews,
               fp_logits: torch.Tensor | None, threshold: float) -> dict[str, torch.Tensor]:
    """The weak-to-strong terms: 'w2s' (the loss to weigh: strong stream, averaged with the
    feature stream when there is one), 'w2s_strong', 'w2s_fp' and 'w2s_kept' (pixels kept)."""
    pseudo, confidence = pseudo_masks(weak_logits)
    terms = {}
    terms["w2s_strong"], terms["w2s_kept"] = masked_pseudo_bce(
        strong_logits, views.mix(pseudo), views.mix(confidence), threshold)
    terms["w2s"] = terms["w2s_strong"]
    if fp_logits is not None:
        terms["w2s_fp"], _ = masked_pseudo_bce(fp_logits, pseudo, confidence, threshold)
        terms["w2s"] = (terms["w2s_strong"] + terms["w2s_fp"]) / 2
    return terms
