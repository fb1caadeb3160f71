"""The variant table, re-exported where the model and the engine have always read it; it lives in
mmdist.config.variants, a leaf the config and data layers read without importing the model."""

from mmdist.config.variants import VARIANTS, VariantSpec, resolve_saliency  # noqa: F401
