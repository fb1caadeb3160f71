"""NIH ChestX-ray14: ``images_001/images/*.png`` ... (or ``images/*.png``) and
``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``).

Default labels: 'No Finding' -> normal (0), any finding list containing 'Pneumonia' -> pneumonia
(1); images with other findings stay as unlabeled (NO_LABEL) pool images unless others='drop'.
All views and all follow-ups of a patient are kept unless filtered.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mmdist.data.adapters.common import Index, relative_name
from mmdist.data.imageset import NO_LABEL
from mmdist.data.records import DatasetError, Record

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
            "Fibrosis", "Hernia", "Infiltration", "Mass", "No Finding", "Nodule",
            "Pleural_Thickening", "Pneumonia", "Pneumothorax")
COLUMNS = {"image": "Image Index", "findings": "Finding Labels", "patient": "Patient ID",
           "view": "View Position", "follow_up": "Follow-up #"}


def _entry_csv(src: Path, csv_path: str | None) -> Path:
    if csv_path:
        path = Path(csv_path) if Path(csv_path).is_absolute() else src / csv_path
        if not path.is_file():
            raise DatasetError(f"nih: label file {path} not found")
        return path
    found = sorted(p for p in list(src.glob("Data_Entry_2017*.csv")) +
                   list(src.glob("*/Data_Entry_2017*.csv")))
    if not found:
        raise DatasetError(f"nih: no Data_Entry_2017*.csv under {src}")
    if len(found) > 1:
        raise DatasetError(f"nih: several label files under {src}: {[str(p) for p in found]}; "
                           f"choose one with csv=<file>")
    return found[0]


def _image_files(src: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    folders = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith("images"))
    if not folders:
        raise DatasetError(f"missing folder: {src}/images*/ (NIH image folders)")
    for folder in folders:
        for path in sorted(folder.rglob("*.png")):
            if path.name in files:
                raise DatasetError(f"nih: {files[path.name]} and {path} have the same name")
            files[path.name] = path
    if not files:
        raise DatasetError(f"nih: no .png images in {[str(f) for f in folders]}")
    return files


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def index_nih(src: Path, csv: str | None = None, positive: str | list[str] = "Pneumonia",
              negative: str = "No Finding", others: str = "unlabeled",
              views: list[str] | None = None, max_per_patient: int = 0,
              missing: str = "error") -> Index:
    """positive: finding(s) that make an image pneumonia (1). negative: the finding list that
    makes it normal (0). others: 'unlabeled' keeps every other image with NO_LABEL, 'drop' leaves
    it out. views: keep only these View Positions (e.g. ['PA']). max_per_patient: keep the first
    N follow-ups of each patient (0 = all). missing: 'error' (a row whose image is absent stops
    the index) or 'skip' (count them; for a partial download)."""
    positives = _as_list(positive)
    for name in positives + [negative]:
        if name not in FINDINGS:
            raise DatasetError(f"nih: {name!r} is not a ChestX-ray14 finding; choose from {FINDINGS}")
    if others not in ("unlabeled", "drop"):
        raise DatasetError(f"nih: others must be 'unlabeled' or 'drop', got {others!r}")
    if missing not in ("error", "skip"):
        raise DatasetError(f"nih: missing must be 'error' or 'skip', got {missing!r}")
    entry = _entry_csv(src, csv)
    files = _image_files(src)
    rows = _read_rows(entry, need_view=bool(views), need_follow_up=max_per_patient > 0)
    notes = {"csv": entry.name, "rows": len(rows), "filtered_view": 0, "filtered_others": 0,
             "filtered_per_patient": 0, "rows_without_image": 0}
    if max_per_patient > 0:
        rows.sort(key=lambda r: (r["patient"], r["follow_up"], r["image"]))
        kept, count = [], {}
        for row in rows:
            count[row["patient"]] = count.get(row["patient"], 0) + 1
            if count[row["patient"]] <= max_per_patient:
                kept.append(row)
        notes["filtered_per_patient"] = len(rows) - len(kept)
        rows = kept
    records = []
    for row in sorted(rows, key=lambda r: r["image"]):
        if views and row["view"] not in views:
            notes["filtered_view"] += 1
            continue
        findings = row["findings"]
        if any(f in findings for f in positives):
            label = 1
        elif findings == [negative]:
            label = 0
        elif others == "drop":
            notes["filtered_others"] += 1
            continue
        else:
            label = NO_LABEL
        path = files.get(row["image"])
        if path is None:
            if missing == "error":
                raise DatasetError(f"{entry} line {row['line']}: image {row['image']} is not in "
                                   f"any images*/ folder under {src}")
            notes["rows_without_image"] += 1
            continue
        records.append(Record(image=str(path), name=relative_name(path, src), label=label,
                              patient=row["patient"], source="nih"))
    if not records:
        raise DatasetError(f"nih: no image of {entry} is left after the filters ({notes})")
    return Index(records, notes=notes)


def _read_rows(entry: Path, need_view: bool, need_follow_up: bool) -> list[dict]:
    with entry.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        needed = ["image", "findings", "patient"] + (["view"] if need_view else []) + \
            (["follow_up"] if need_follow_up else [])
        for key in needed:
            if COLUMNS[key] not in header:
                raise DatasetError(f"{entry}: no {COLUMNS[key]!r} column (has {header})")
        rows = []
        for line, raw in enumerate(reader, start=2):
            findings = [f.strip() for f in (raw[COLUMNS["findings"]] or "").split("|")]
            for finding in findings:
                if finding not in FINDINGS:
                    raise DatasetError(f"{entry} line {line}: unknown finding {finding!r} "
                                       f"(known: {', '.join(FINDINGS)})")
            row = {"line": line, "image": raw[COLUMNS["image"]].strip(), "findings": findings,
                   "patient": (raw[COLUMNS["patient"]] or "").strip(),
                   "view": (raw.get(COLUMNS["view"]) or "").strip()}
            if need_follow_up:
                try:
                    row["follow_up"] = int(raw[COLUMNS["follow_up"]])
                except (TypeError, ValueError):
                    raise DatasetError(f"{entry} line {line}: Follow-up # "
                                       f"{raw[COLUMNS['follow_up']]!r} is not an integer") from None
            if not row["patient"]:
                raise DatasetError(f"{entry} line {line}: empty Patient ID")
            rows.append(row)
    if not rows:
        raise DatasetError(f"{entry}: no rows")
    return rows
