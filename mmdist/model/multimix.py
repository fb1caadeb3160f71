"""One network for every variant of the table: shared encoder, optional classifier head, optional decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmdist.model.blocks import ClassifierHead, Decoder, Encoder, scaled_channels
from mmdist.model.saliency import input_saliency
from mmdist.config.variants import VARIANTS, VariantSpec, resolve_saliency


@dataclass
class NetOutput:
    """What one forward returns; fields are None when the inputs or the variant leave them out."""

    cls_logits: Optional[torch.Tensor] = None
    """(N_c, 2) logits of the classification images."""
    pseudo_logits: Optional[torch.Tensor] = None
    """(N_p, 2) logits of the pseudo-label images, computed without gradient."""
    seg_logits: Optional[torch.Tensor] = None
    """(N_s, 1, H, W) mask logits of the segmentation images."""
    seg_cls_logits: Optional[torch.Tensor] = None
    """(N_s, 2) class logits of the segmentation images (the saliency's source)."""
    saliency: Optional[torch.Tensor] = None
    """(N_s, 1, H, W) saliency maps |d score / d input| of the segmentation images."""
    seg_weak_logits: Optional[torch.Tensor] = None
    """(N_w, 1, H, W) mask logits of the weak segmentation views, without gradient (pseudo-masks)."""
    seg_fp_logits: Optional[torch.Tensor] = None
    """(N_w, 1, H, W) mask logits of the weak views decoded from dropped-out encoder features
    (the feature-perturbation stream; None when feature_dropout is 0)."""


class MultiMixNet(nn.Module):
    """The paper's backbone with the heads a variant needs.

    ``forward(cls_images, seg_images, pseudo_images, seg_weak_images, feature_dropout)`` runs
    everything one training step needs in one call, so a DistributedDataParallel wrapper sees a
    single forward per step; ``seg_weak_images`` are the weak views of weak-to-strong
    consistency (mmdist.losses.w2s). Inputs are
    (N, 1, H, W) float tensors with H, W multiples of 32, normalised to [-1, 1].
    """

    def __init__(self, variant: str = "multimix", saliency: str = "auto", width: float = 1.0,
                 dropout: float = 0.25, saliency_inner_scale: float = 1024.0):
        super().__init__()
        spec: VariantSpec = VARIANTS[variant]
        saliency = resolve_saliency(variant, saliency)  # ConfigError (a ValueError) if no bridge
        self.spec = spec
        self.saliency_mode = saliency
        self.saliency_inner_scale = saliency_inner_scale
        channels = scaled_channels(width)
        self.encoder = Encoder(channels, dropout)
        self.classifier = ClassifierHead(channels[-1]) if spec.classifier else None
        bridge_channels = 2 if saliency != "none" else 0
        self.decoder = Decoder(channels, dropout, bridge_channels) if spec.decoder else None

    def encode(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Optional[torch.Tensor]]:
        features = self.encoder(images)
        logits = self.classifier(features[-1]) if self.classifier is not None else None
        return features, logits

    def forward(self, cls_images: Optional[torch.Tensor] = None,
                seg_images: Optional[torch.Tensor] = None,
                pseudo_images: Optional[torch.Tensor] = None,
                seg_weak_images: Optional[torch.Tensor] = None,
                feature_dropout: float = 0.0) -> NetOutput:
        out = NetOutput()
        if cls_images is not None:
            if self.classifier is None:
                raise ValueError(f"variant {self.spec.name!r} has no classifier")
            _, out.cls_logits = self.encode(cls_images)
        if pseudo_images is not None:
            if self.classifier is None:
                raise ValueError(f"variant {self.spec.name!r} has no classifier")
            with torch.no_grad():
                _, logits = self.encode(pseudo_images)
            out.pseudo_logits = logits.detach()
        if seg_images is not None:
            features, out.seg_cls_logits, out.saliency, bridge = self._seg_features(seg_images)
            out.seg_logits = self.decoder(features, bridge)
        if seg_weak_images is not None:
            out.seg_weak_logits, out.seg_fp_logits = self._weak_and_perturbed(seg_weak_images,
                                                                              feature_dropout)
        return out

    def _seg_features(self, images: torch.Tensor):
        """Encoder features, class logits, saliency (or None) and the decoder's bridge input (or
        None) of segmentation images."""
        if self.decoder is None:
            raise ValueError(f"variant {self.spec.name!r} has no decoder")
        if self.saliency_mode == "none":
            features, logits = self.encode(images)
            return features, logits, None, None
        features, logits, saliency = input_saliency(images, self.encode, self.saliency_mode,
                                                    self.saliency_inner_scale)
        return features, logits, saliency, torch.cat([images, saliency.to(images.dtype)], dim=1)

    def _weak_and_perturbed(self, images: torch.Tensor, feature_dropout: float):
        """(weak logits without gradient, feature-stream logits or None): one encoder pass, the
        decoder once on the clean features and once on features after channel dropout."""
        if not feature_dropout:
            with torch.no_grad():
                features, _, _, bridge = self._seg_features(images)
                return self.decoder(features, bridge).detach(), None
        features, _, _, bridge = self._seg_features(images)
        with torch.no_grad():
            clean = self.decoder([f.detach() for f in features],
                                 bridge.detach() if bridge is not None else None)
        dropped = [F.dropout2d(f, feature_dropout, training=self.training) for f in features]
        return clean.detach(), self.decoder(dropped, bridge)


def build_model(model_config) -> MultiMixNet:
    """Build the network from a ``ModelConfig`` (mmdist.config)."""
    return MultiMixNet(variant=model_config.variant, saliency=model_config.saliency,
                       width=model_config.width, dropout=model_config.dropout,
                       saliency_inner_scale=model_config.saliency_inner_scale)
