"""Model: encoder, classifier head, decoder, saliency bridge, and the table of paper variants."""

from mmdist.model.multimix import MultiMixNet, NetOutput, build_model
from mmdist.config.variants import VARIANTS, VariantSpec

__all__ = ["MultiMixNet", "NetOutput", "build_model", "VARIANTS", "VariantSpec"]
