"""A generic manifest: ``labels.csv`` beside the images, paths relative to the CSV.

Columns: ``image`` (required); optional ``label`` (normal|pneumonia|0|1, empty = unlabeled),
``mask`` and/or ``left_mask`` + ``right_mask`` (merged), ``patient`` (empty = own patient).
Other columns are ignored. This is how ../shared/data is laid out.

An image without a patient is split as a patient of its own, so a patient's other views can land
in another split: a manifest with empty (or no) patient cells is indexed with a warning that
counts them.
"""

from __future__ import annotations

import csv as csvlib
import warnings
from pathlib import Path

from mmdist.data.adapters.common import Index, relative_name
from mmdist.data.imageset import CLASS_NAMES, NO_LABEL
from mmdist.data.records import DatasetError, Record, check_unique

LABEL_VALUES = {**{name: i for i, name in enumerate(CLASS_NAMES)},
                **{str(i): i for i in range(len(CLASS_NAMES))}, "": NO_LABEL}


def _manifest(src: Path, csv_name: str) -> Path:
    path = src if src.is_file() else src / csv_name
    if not path.is_file():
        raise DatasetError(f"csv: manifest {path} not found")
    return path


def index_csv(src: Path, csv: str = "labels.csv", label_column: str = "label") -> Index:
    """src: the dataset folder (holding ``csv``) or the CSV file itself.
    label_column: the column with class names or ids (absent = every image unlabeled)."""
    manifest = _manifest(src, csv)
    root = manifest.parent
    with manifest.open(newline="") as handle:
        reader = csvlib.DictReader(handle)
        header = reader.fieldnames or []
        if "image" not in header:
            raise DatasetError(f"{manifest}: no 'image' column (has {header})")
        if ("left_mask" in header) != ("right_mask" in header):
            raise DatasetError(f"{manifest}: 'left_mask' and 'right_mask' columns come as a pair "
                               f"(has {header})")
        mask_columns = [c for c in ("mask", "left_mask", "right_mask") if c in header]
        records = []
        for line, row in enumerate(reader, start=2):
            where = f"{manifest} line {line}"
            image = _existing(root, row["image"], where, "image")
            raw_label = (row.get(label_column) or "").strip().lower()
            if raw_label not in LABEL_VALUES:
                raise DatasetError(f"{where}: unknown label {row.get(label_column)!r} in column "
                                   f"{label_column!r} (expected one of {CLASS_NAMES}, 0, 1 or "
                                   f"empty)")
            masks = tuple(_existing(root, row[c], where, c) for c in mask_columns
                          if (row[c] or "").strip())
            if "left_mask" in header and \
                    bool((row["left_mask"] or "").strip()) != bool((row["right_mask"] or "").strip()):
                raise DatasetError(f"{where}: a left_mask needs its right_mask and vice versa")
            records.append(Record(image=image, name=relative_name(Path(image), root),
                                  label=LABEL_VALUES[raw_label], masks=masks,
                                  patient=(row.get("patient") or "").strip(), source=root.name))
    if not records:
        raise DatasetError(f"{manifest}: no rows")
    check_unique(records, str(manifest), position=lambda i: f"line {i + 2}")  # line 1 = header
    missing = sum(1 for r in records if not r.patient)
    if missing:
        where = f"has no 'patient' column ({missing} images)" if "patient" not in header else \
            f"has {missing} of {len(records)} rows with an empty 'patient' cell"
        warnings.warn(f"{manifest} {where}: each such image is split as a patient of its own, so "
                      "another view of the same patient can land in another split",
                      stacklevel=2)
    return Index(records, notes={"csv": manifest.name})


def _existing(root: Path, value: str, where: str, column: str) -> str:
    value = (value or "").strip()
    if not value:
        raise DatasetError(f"{where}: empty {column!r}")
    path = Path(value) if Path(value).is_absolute() else root / value
    if not path.is_file():
        raise DatasetError(f"{where}: {column} {value} not found ({path})")
    return str(path)
