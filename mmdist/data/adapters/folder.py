"""A plain folder of images (searched recursively): an unlabeled pool, one patient per image."""

from __future__ import annotations

from pathlib import Path

from mmdist.data.adapters.common import IMAGE_SUFFIXES, Index, list_images, relative_name
from mmdist.data.records import DatasetError, Record


def index_folder(src: Path) -> Index:
    if not src.is_dir():
        raise DatasetError(f"missing folder: {src} (image folder)")
    files = list_images(src, recursive=True)
    if not files:
        raise DatasetError(f"folder: no images ({', '.join(IMAGE_SUFFIXES)}) under {src}")
    return Index([Record(image=str(p), name=relative_name(p, src), source=src.name)
                  for p in files])
