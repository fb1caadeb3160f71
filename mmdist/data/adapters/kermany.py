"""Kermany et al. pneumonia set: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``."""

from __future__ import annotations

import re
from pathlib import Path

from mmdist.data.adapters.common import Index, list_images, relative_name, require_dir
from mmdist.data.records import DatasetError, Record

CLASS_FOLDERS = {"NORMAL": 0, "PNEUMONIA": 1}
SPLITS = ("train", "val", "test")

# 'person1003_bacteria_2934.jpeg' -> person1003. NORMAL images are 'IM-0629-0001.jpeg' with extra
# views 'IM-0629-0001-0002.jpeg' (and 'NORMAL2-IM-...'): the views share the base as patient.
_PERSON = re.compile(r"^(person\d+)_")
_NORMAL_STUDY = re.compile(r"^((?:NORMAL2-)?IM-\d+-\d+)(?:-\d+)?$")


def kermany_patient(stem: str) -> str:
    """Patient id from a Kermany file stem; '' when the name carries none."""
    match = _PERSON.match(stem) or _NORMAL_STUDY.match(stem)
    return match.group(1) if match else ""


def _root(src: Path) -> Path:
    """The folder holding train/val/test (accepts chest_xray itself or a parent of it)."""
    for candidate in (src, src / "chest_xray", src / "chest_xray" / "chest_xray"):
        if any((candidate / split).is_dir() for split in SPLITS):
            return candidate
    raise DatasetError(f"kermany: no train/, val/ or test/ folder under {src} "
                       f"(expected chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}})")


def index_kermany(src: Path, splits: list[str] | None = None) -> Index:
    """splits: the source's split folders to take (default: every one present)."""
    root = _root(src)
    if splits is None:
        splits = [s for s in SPLITS if (root / s).is_dir()]
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DatasetError(f"kermany: unknown split(s) {unknown}; choose from {list(SPLITS)}")
    records = []
    for split in splits:
        require_dir(root / split, f"Kermany split {split!r}")
        extra = sorted(p.name for p in (root / split).iterdir()
                       if p.is_dir() and not p.name.startswith((".", "__")) and
                       p.name not in CLASS_FOLDERS)
        if extra:
            raise DatasetError(f"kermany: unknown class folder {root / split / extra[0]} "
                               f"(classes are {', '.join(CLASS_FOLDERS)})")
        for folder, label in CLASS_FOLDERS.items():
            class_dir = require_dir(root / split / folder, f"Kermany class {folder}")
            files = list_images(class_dir)
            if not files:
                raise DatasetError(f"kermany: class folder {class_dir} holds no images")
            records += [Record(image=str(p), name=relative_name(p, root), label=label,
                               patient=kermany_patient(p.stem), source="kermany") for p in files]
    return Index(records, notes={"splits": list(splits)})
