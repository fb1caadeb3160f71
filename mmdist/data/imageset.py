"""ImageSet: the one in-memory (or memory-mapped) form every data source is turned into.

The built-in generator and the prepared caches of real datasets both produce an ImageSet, so
everything downstream (splits, streams, augmentation, evaluation) reads one layout: uint8 arrays
of equal-sized square grayscale images, optional masks, labels and patient ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

NO_LABEL = -1
CLASS_NAMES = ("normal", "pneumonia")


@dataclass
class ImageSet:
    images: np.ndarray
    """(N, H, W) uint8, H == W; may be a np.memmap (never copied whole)."""
    labels: np.ndarray
    """(N,) int64 class ids (0 normal, 1 pneumonia), NO_LABEL where unknown."""
    masks: Optional[np.ndarray] = None
    """(N, H, W) uint8 lung masks {0, 1}, or None when the source has no masks."""
    patients: Optional[np.ndarray] = None
    """(N,) str patient ids ('' = unknown: the image is its own patient)."""
    source: str = "unknown"
    names: Optional[np.ndarray] = None
    """(N,) str per-image names (source paths), for reports."""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.source}: images must be (N, H, W) uint8, got "
                             f"{self.images.shape} {self.images.dtype}")
        n = len(self.images)
        if self.labels.shape != (n,):
            raise ValueError(f"{self.source}: labels must have shape ({n},), got {self.labels.shape}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(f"{self.source}: masks {self.masks.shape} do not match images "
                             f"{self.images.shape}")
        if self.patients is None:
            self.patients = np.array([""] * n, dtype=object)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def has_labels(self) -> bool:
        return bool((np.asarray(self.labels) != NO_LABEL).any())

    def patient_groups(self) -> np.ndarray:
        """(N,) group keys: the patient id, or a unique key per image where it is unknown."""
        return np.array([p if p else f"__image_{i}" for i, p in enumerate(self.patients)],
                        dtype=object)
