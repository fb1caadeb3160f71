"""JSRT raw images (``*.IMG``: 2048x2048, 12-bit big-endian) with the SCR lung masks.

SCR ships one GIF per lung and image, at 1024x1024, in folders named ``left lung`` and
``right lung`` (under ``scratch/fold1/masks/`` and ``fold2``); they are merged into one mask.
"""

from __future__ import annotations

from pathlib import Path

from mmdist.data.adapters.common import Index, by_stem, list_images, pair_masks, relative_name
from mmdist.data.records import DatasetError, Record

LEFT_NAMES = ("left lung", "leftlung", "left_lung", "leftMask")
RIGHT_NAMES = ("right lung", "rightlung", "right_lung", "rightMask")


def _mask_folders(src: Path, names: tuple[str, ...]) -> list[Path]:
    wanted = {n.lower().replace(" ", "").replace("_", "") for n in names}
    return sorted(p for p in src.rglob("*")
                  if p.is_dir() and p.name.lower().replace(" ", "").replace("_", "") in wanted)


def index_jsrt(src: Path, masks: str | None = None, require_masks: bool = True) -> Index:
    """src: folder with the ``.IMG`` files (searched recursively).
    masks: folder holding the SCR ``left lung``/``right lung`` folders (default: searched for
        under src). require_masks: every image must have both lung masks.
    """
    images = list_images(src, recursive=True, suffixes=(".img",))
    if not images:
        raise DatasetError(f"jsrt: no .IMG files under {src}")
    mask_root = Path(masks) if masks else src
    if masks and not mask_root.is_dir():
        raise DatasetError(f"missing folder: {mask_root} (SCR masks)")
    left_dirs, right_dirs = _mask_folders(mask_root, LEFT_NAMES), _mask_folders(mask_root, RIGHT_NAMES)
    if require_masks and not (left_dirs and right_dirs):
        raise DatasetError(f"jsrt: no SCR 'left lung' and 'right lung' mask folders under "
                           f"{mask_root} (pass masks=<SCR folder>, or require_masks=False)")
    gif = (".gif", ".png")
    left = by_stem([p for d in left_dirs for p in list_images(d, suffixes=gif)], "SCR left lung")
    right = by_stem([p for d in right_dirs for p in list_images(d, suffixes=gif)], "SCR right lung")
    by_name = by_stem(images, "JSRT images")
    paired, without = pair_masks(by_name, [("left lung", left), ("right lung", right)],
                                 require_all=require_masks)
    records = [Record(image=str(p), name=relative_name(p, src), masks=paired.get(stem, ()),
                      patient=stem, source="jsrt") for stem, p in sorted(by_name.items())]
    return Index(records, notes={"images_without_mask": without})
