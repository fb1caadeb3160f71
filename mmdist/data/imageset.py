"""ImageSet: the one in-memory (or memory-mapped) form every data source is turned into.

The built-in generator and the prepared caches of real datasets both produce an ImageSet, so
everything downstream (splits, streams, augmentation, evaluation) reads one layout: uint8 arrays
of equal-sized square grayscale images, optional masks, labels and patient ids.
"""

from __future__ import annotations

import mmap
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

    # Pickling (batch workers started by spawn/forkserver receive the ImageSet pickled): a
    # memory-mapped array travels as its file reference and is mapped again on the other side,
    # so a worker shares the page cache instead of receiving a copy of the pool.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("images", "masks"):
            state[name] = _MappedFile.of(state[name]) or state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        for name in ("images", "masks"):
            if isinstance(state[name], _MappedFile):
                state[name] = state[name].open()
        self.__dict__.update(state)

    def patient_groups(self) -> np.ndarray:
        """(N,) group keys: the patient id, or a unique key per image where it is unknown."""
        return np.array([p if p else f"__image_{i}" for i, p in enumerate(self.patients)],
                        dtype=object)


@dataclass(frozen=True)
class _MappedFile:
    """Where a read-only memory-mapped array lives, to map it again in another process."""

    filename: str
    dtype: str
    shape: tuple
    offset: int
    fortran: bool

    @classmethod
    def of(cls, array) -> Optional["_MappedFile"]:
        """The reference for a whole-file np.memmap (np.load(mmap_mode='r')); None for anything
        else (in-memory arrays, and views of a mapping, whose offset numpy does not track)."""
        if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)
                and array.filename and array.mode == "r"):
            return None
        return cls(str(array.filename), array.dtype.str, tuple(array.shape), int(array.offset),
                   bool(np.isfortran(array)))

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r", offset=self.offset,
                         shape=self.shape, order="F" if self.fortran else "C")
