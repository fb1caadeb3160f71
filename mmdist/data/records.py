"""The record: one image of a dataset as an adapter indexed it, before anything is decoded.

Every layout adapter (mmdist.data.adapters) turns a dataset folder into a list of ``Record``;
``mmdist.data.cache_writer`` decodes them into a cache. A record only names files and carries the
metadata the layout gives (label, patient); it never holds pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mmdist.data.imageset import CLASS_NAMES, NO_LABEL


class DatasetError(ValueError):
    """A dataset folder, manifest row or file cannot be indexed. The message names it."""


@dataclass(frozen=True)
class Record:
    """One image and what the layout says about it.

    image: absolute path of the image file (any format mmdist.data.imaging reads).
    name: the image path relative to the dataset folder; unique within a dataset, used in
        manifests and reports.
    label: class id (0 normal, 1 pneumonia) or NO_LABEL.
    masks: paths of the lung mask files, merged (logical OR) into one mask; () = no mask.
        Left and right lung masks are two entries.
    patient: patient id; '' means unknown (the image is then its own patient).
    source: dataset name ('kermany', 'jsrt', ...).
    """

    image: str
    name: str
    label: int = NO_LABEL
    masks: tuple[str, ...] = ()
    patient: str = ""
    source: str = "unknown"

    def __post_init__(self) -> None:
        if self.label != NO_LABEL and not 0 <= self.label < len(CLASS_NAMES):
            raise DatasetError(f"{self.name}: label {self.label} is not a class id "
                               f"(0..{len(CLASS_NAMES) - 1}) or NO_LABEL")

    @property
    def has_mask(self) -> bool:
        return bool(self.masks)


def check_unique(records: list[Record], where: str,
                 position: Callable[[int], str] = lambda i: f"entry {i + 1}") -> None:
    """Raise DatasetError naming the first image that two records share; ``position`` names a
    record's place in the source (an entry number, or a CSV line)."""
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        if record.image in seen:
            raise DatasetError(f"{where} {position(i)}: image {record.name} is already listed "
                               f"on {position(seen[record.image])}")
        seen[record.image] = i
