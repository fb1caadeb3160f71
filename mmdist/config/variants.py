"""The paper's nine models (Table 2/3), and baselines beyond it, as one table over the same parts,
with the names of the training streams they read.

Every variant shares the encoder; the flags say which heads exist, how the classifier learns from
unlabeled images, whether the saliency bridge joins the heads and whether the segmentation
consistency term is on. The data layer reads ``streams`` to know which of the five streams to
produce; the losses read the rest.

A leaf of the package (it imports only mmdist.config.errors), so that the config validates a
variant, the data layer names its streams, the model builds its heads and the engine reads the
flags from one table without any of them importing a layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from mmdist.config.errors import ConfigError

# Stream names: which a model consumes is VariantSpec.streams; how each is sampled and augmented
# is mmdist.data.sampler.
SEG_LABELED = "seg_labeled"
SEG_UNLABELED = "seg_unlabeled"
CLS_LABELED = "cls_labeled"
CLS_WEAK = "cls_unlabeled_weak"
CLS_STRONG = "cls_unlabeled_strong"
CLS_WEAK2 = "cls_unlabeled_weak2"

SALIENCY_MODES = ("auto", "none", "detached", "differentiable")


@dataclass(frozen=True)
class VariantSpec:
    name: str
    classifier: bool
    """Has the classification head (and trains it on labeled images)."""
    decoder: bool
    """Has the U-Net decoder (and trains it with Dice on labeled masks)."""
    ssl: Literal["none", "fixmatch", "mixmatch"]
    """How the classifier learns from unlabeled images."""
    bridge: bool
    """The saliency bridge is on by default (model.saliency=auto resolves to 'detached')."""
    consistency: bool
    """Reads the unlabeled segmentation images and trains on them (losses.seg_unlabeled: the
    paper's KL between labeled and unlabeled predictions, or weak-to-strong consistency)."""
    description: str
    seg_unlabeled: Optional[str] = None
    """The variant's own unlabeled segmentation loss ('w2s'), overriding losses.seg_unlabeled;
    None follows the config."""
    unused_parameters: bool = False
    """Some parameter of its model may get no gradient in a training step, so DDP must look for
    them after every backward (engine.find_unused_parameters=auto). None does: the model builds
    only the heads the variant trains (tests/engine/test_unused_parameters.py probes each)."""

    def unlabeled_seg_loss(self, loss_config) -> Optional[str]:
        """'kl' or 'w2s' for a variant that trains on unlabeled segmentation images, else None."""
        if not (self.decoder and self.consistency):
            return None
        return self.seg_unlabeled or loss_config.seg_unlabeled

    @property
    def tasks(self) -> tuple[str, ...]:
        """The data tasks this variant trains on."""
        return tuple(t for t, on in (("classification", self.classifier),
                                     ("segmentation", self.decoder)) if on)

    @property
    def streams(self) -> tuple[str, ...]:
        names = []
        if self.decoder:
            names.append(SEG_LABELED)
            if self.consistency:
                names.append(SEG_UNLABELED)
        if self.classifier:
            names.append(CLS_LABELED)
            if self.ssl == "fixmatch":
                names += [CLS_WEAK, CLS_STRONG]
            elif self.ssl == "mixmatch":
                names += [CLS_WEAK, CLS_WEAK2]
        return tuple(names)


def _v(name, classifier, decoder, ssl, bridge, consistency, description,
       seg_unlabeled=None) -> VariantSpec:
    return VariantSpec(name, classifier, decoder, ssl, bridge, consistency, description,
                       seg_unlabeled)


VARIANTS: dict[str, VariantSpec] = {v.name: v for v in (
    _v("unet", False, True, "none", False, False, "U-Net: segmentation only"),
    _v("enc", True, False, "none", False, False, "Encoder: supervised classification only"),
    _v("enc_mm", True, False, "mixmatch", False, False, "Encoder + MixMatch SSL"),
    _v("enc_ssl", True, False, "fixmatch", False, False, "Encoder + confidence-based augmentation SSL"),
    _v("umtl", True, True, "none", False, False, "Multi-task U-Net"),
    _v("umtl_s", True, True, "none", True, False, "Multi-task U-Net + saliency bridge"),
    _v("umtl_ssl", True, True, "fixmatch", False, False, "Multi-task U-Net + SSL classification"),
    _v("umtl_ssl_s", True, True, "fixmatch", True, False, "UMTL + SSL + saliency bridge"),
    _v("multimix", True, True, "fixmatch", True, True,
       "MultiMix: UMTL + SSL + saliency bridge + segmentation consistency"),
    # Beyond the paper: the field's segmentation-only semi-supervised baseline on the same
    # unlabeled segmentation images (what MultiMix must beat with the same masks).
    _v("unet_w2s", False, True, "none", False, True,
       "U-Net + weak-to-strong consistency on the unlabeled segmentation images", "w2s"),
)}


def resolve_saliency(variant: str, saliency: str) -> str:
    """The saliency mode in force for ``variant`` ('none', 'detached' or 'differentiable'):
    'auto' takes the variant's own (detached for the bridged variants, none otherwise).

    Raises ConfigError naming model.saliency when the variant lacks the classifier and decoder a
    bridge joins, the one place that rule is kept (the config and the model both ask here)."""
    spec = VARIANTS[variant]
    if saliency == "auto":
        return "detached" if spec.bridge else "none"
    if saliency not in SALIENCY_MODES:
        raise ConfigError(f"model.saliency: {saliency!r} is not one of {list(SALIENCY_MODES)}")
    if saliency != "none" and not (spec.classifier and spec.decoder):
        raise ConfigError(f"model.saliency: variant {variant!r} has no classifier and decoder "
                          "to bridge; use 'none'")
    return saliency
