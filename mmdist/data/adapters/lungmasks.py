"""The NLM tuberculosis sets with lung masks: Montgomery County and Shenzhen.

Montgomery: ``MontgomerySet/CXR_png/MCUCXR_0001_0.png`` with
``ManualMask/leftMask/MCUCXR_0001_0.png`` and ``ManualMask/rightMask/...`` (merged).
Shenzhen: ``ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png`` with the separately published lung
masks in a ``mask/`` or ``masks/`` folder named ``CHNCXR_0001_0_mask.png`` (or without the
``_mask`` suffix); only 566 of the 662 images have one, the others enter the unlabeled pool.
The TB labels (name suffix _0/_1) are not pneumonia labels, so records carry NO_LABEL.
"""

from __future__ import annotations

from pathlib import Path

from mmdist.data.adapters.common import (Index, by_stem, find_dir, list_images, pair_masks,
                                         relative_name, require_dir)
from mmdist.data.records import DatasetError, Record


def _images(src: Path, dataset: str) -> tuple[Path, dict[str, Path]]:
    folder = find_dir(src, ("CXR_png",), "images")
    if folder is None:
        raise DatasetError(f"missing folder: CXR_png/ under {src} ({dataset} images)")
    images = by_stem(list_images(folder, suffixes=(".png",)), f"{dataset} images")
    if not images:
        raise DatasetError(f"{dataset}: image folder {folder} holds no .png images")
    return folder, images


def _records(src: Path, images: dict[str, Path], paired: dict, dataset: str) -> list[Record]:
    return [Record(image=str(p), name=relative_name(p, src), masks=paired.get(stem, ()),
                   patient=stem, source=dataset) for stem, p in sorted(images.items())]


def index_montgomery(src: Path, require_masks: bool = True) -> Index:
    _, images = _images(src, "montgomery")
    manual = find_dir(src, ("ManualMask",), "masks")
    if manual is None:
        raise DatasetError(f"missing folder: ManualMask/ under {src} (Montgomery lung masks)")
    left = by_stem(list_images(require_dir(manual / "leftMask", "Montgomery left lung masks"),
                               suffixes=(".png",)), "leftMask")
    right = by_stem(list_images(require_dir(manual / "rightMask", "Montgomery right lung masks"),
                                suffixes=(".png",)), "rightMask")
    paired, without = pair_masks(images, [("leftMask", left), ("rightMask", right)],
                                 require_all=require_masks)
    return Index(_records(src, images, paired, "montgomery"),
                 notes={"images_without_mask": without})


def index_shenzhen(src: Path, masks: str | None = None) -> Index:
    """masks: the lung mask folder (default: a ``mask``/``masks`` folder found under src)."""
    _, images = _images(src, "shenzhen")
    mask_dir = Path(masks) if masks else find_dir(src, ("mask", "masks"), "masks")
    if mask_dir is None:
        raise DatasetError(f"missing folder: mask/ or masks/ under {src} (Shenzhen lung masks; "
                           f"pass masks=<folder> if they live elsewhere)")
    require_dir(mask_dir, "Shenzhen lung masks")
    files = list_images(mask_dir, suffixes=(".png",))
    if not files:
        raise DatasetError(f"shenzhen: mask folder {mask_dir} holds no .png masks")
    found = by_stem(files, "Shenzhen masks", strip="_mask")
    paired, without = pair_masks(images, [("lung", found)], require_all=False)
    return Index(_records(src, images, paired, "shenzhen"),
                 notes={"images_without_mask": without})
