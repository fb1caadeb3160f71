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
    """(N, H, W) uint8, H == W; may be a np.memmap (never copied whole), or a RowStack of
    memory maps (a classification source and its own unlabeled pool)."""
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
            state[name] = _by_reference(state[name])
        return state

    def __setstate__(self, state: dict) -> None:
        for name in ("images", "masks"):
            state[name] = _reopened(state[name])
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


def _by_reference(array):
    """A whole-file memory map as its file reference (to pickle); anything else as it is."""
    return _MappedFile.of(array) or array


def _reopened(value):
    """The inverse of _by_reference: a file reference mapped again."""
    return value.open() if isinstance(value, _MappedFile) else value


class RowStack:
    """Several (N_i, H, W) uint8 arrays read as one (sum N_i, H, W) array without copying: how
    a classification source and an unlabeled pool of another source (data.unlabeled) become one
    ImageSet, whose index ranges the streams then sample. Supports what the readers use:
    ``shape``, ``len`` and indexing by an integer or an integer array (rows come back as a new
    array, each part read in one fancy index). Pickles its memory-mapped parts by reference."""

    ndim = 3

    def __init__(self, parts: list[np.ndarray]):
        shapes = {tuple(p.shape[1:]) for p in parts}
        if not parts or len(shapes) != 1 or any(p.dtype != np.uint8 or p.ndim != 3 for p in parts):
            raise ValueError(f"RowStack: parts must be (N, H, W) uint8 of one size, got "
                             f"{[(p.shape, str(p.dtype)) for p in parts]}")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]),) + shapes.pop()
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"RowStack: rows outside [0, {len(self)})")
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.uint8)
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for part in np.unique(part_of):
            chosen = part_of == part
            out[chosen] = self.parts[part][rows[chosen] - self.offsets[part]]
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["parts"] = [_by_reference(p) for p in self.parts]
        return state

    def __setstate__(self, state: dict) -> None:
        state["parts"] = [_reopened(p) for p in state["parts"]]
        self.__dict__.update(state)
