"""The prepared cache: a folder of memory-mapped uint8 arrays plus a manifest.

Layout (written by mmdist.data.cache_writer, read here):

    images.npy     (N, S, S) uint8 grayscale images, memory-mapped on load
    masks.npy      (N, S, S) uint8 {0, 1} lung masks; only when some image has a mask
                   (rows of images without one are zero, see has_mask)
    has_mask.npy   (N,) bool, beside masks.npy
    labels.npy     (N,) int64 class ids, NO_LABEL (-1) where unknown
    manifest.csv   one row per image: index, name (source path), sha1 (of the source file),
                   label, patient, width, height (original size), masks, mask_sha1
    manifest.json  the prepare summary (dataset, source, size, options, counts, rejects with
                   their paths and reasons); written last, so its presence marks a finished cache

Loading maps the arrays read-only (np.load(mmap_mode='r')): every process that loads the same
cache shares the page cache instead of holding its own copy of the pool.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from mmdist.data.imageset import ImageSet
from mmdist.data.records import DatasetError

IMAGES, MASKS, HAS_MASK, LABELS = "images.npy", "masks.npy", "has_mask.npy", "labels.npy"
MANIFEST_CSV, MANIFEST_JSON = "manifest.csv", "manifest.json"
PARTIAL = ".partial"
"""Subfolder of an unfinished prepare (staging arrays and the journal of finished chunks)."""
FORMAT = "mmdist-cache/1"
MANIFEST_COLUMNS = ("index", "name", "sha1", "label", "patient", "width", "height", "masks",
                    "mask_sha1")


def write_manifest(path: str | Path, rows, summary: dict) -> None:
    """Write manifest.csv (``rows``: sequences in MANIFEST_COLUMNS order) and then manifest.json
    (``summary`` plus the format tag), each atomically; the arrays must already be in place."""
    path = Path(path)
    tmp = path / (MANIFEST_CSV + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path / MANIFEST_CSV)
    tmp = path / (MANIFEST_JSON + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **summary}, indent=1, default=str))
    os.replace(tmp, path / MANIFEST_JSON)


def is_cache(path: str | Path) -> bool:
    """True when ``path`` holds a finished cache."""
    return (Path(path) / MANIFEST_JSON).is_file()


def read_summary(path: str | Path) -> dict:
    path = Path(path)
    try:
        summary = json.loads((path / MANIFEST_JSON).read_text())
    except FileNotFoundError:
        hint = (" (an unfinished prepare is there: run it again to resume)"
                if (path / PARTIAL).is_dir() else
                " (prepare one with: python -m mmdist.prepare --dataset ... --src ... --out DIR)")
        raise DatasetError(f"{path} is not a prepared cache: no {MANIFEST_JSON}{hint}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path / MANIFEST_JSON}: not valid JSON ({exc})") from None
    if summary.get("format") != FORMAT:
        raise DatasetError(f"{path / MANIFEST_JSON}: format {summary.get('format')!r}, "
                           f"expected {FORMAT!r}")
    return summary


def _array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"cache file {path} is missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"cache file {path} cannot be read: {exc}") from None


def read_manifest_rows(path: str | Path) -> list[dict]:
    """Every manifest.csv row as a dict (for reports; load_cache reads columns more lightly)."""
    path = Path(path) / MANIFEST_CSV
    if not path.is_file():
        raise DatasetError(f"cache file {path} is missing")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _manifest_columns(path: Path, n: int) -> dict[str, np.ndarray]:
    """names, patients (object), sha1 ('S40') and original sizes (int32) from manifest.csv, read
    row by row into compact arrays: a 100k-image cache costs a reader ~15 MB, not a dict a row."""
    file = path / MANIFEST_CSV
    if not file.is_file():
        raise DatasetError(f"cache file {file} is missing")
    names = np.empty(n, dtype=object)
    patients = np.empty(n, dtype=object)
    sha1 = np.zeros(n, dtype="S40")
    sizes = np.zeros((n, 2), dtype=np.int32)
    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if tuple(header) != MANIFEST_COLUMNS:
            raise DatasetError(f"{file}: header {header} is not {list(MANIFEST_COLUMNS)}")
        count = 0
        for row in reader:
            if count >= n:
                count += 1
                continue
            names[count], sha1[count], patients[count] = row[1], row[2].encode(), row[4]
            sizes[count] = int(row[5]), int(row[6])
            count += 1
    if count != n:
        raise DatasetError(f"{path}: the cache is inconsistent: {n} images but {count} "
                           f"manifest rows")
    return {"names": names, "patients": patients, "sha1": sha1, "original_size": sizes}


def load_cache(path: str | Path) -> ImageSet:
    """Map a prepared cache as an ImageSet (images/masks are read-only np.memmap).

    meta: 'has_mask' (N,) bool or None, 'sha1' (N,) 'S40' source-file hashes,
    'original_size' (N, 2) int32 (width, height), 'summary' (manifest.json), 'path'.
    """
    path = Path(path)
    summary = read_summary(path)
    images = _array(path / IMAGES, mmap=True)
    labels = _array(path / LABELS, mmap=False).astype(np.int64, copy=False)
    masks = has_mask = None
    if summary.get("with_mask", 0) > 0:
        masks = _array(path / MASKS, mmap=True)
        has_mask = _array(path / HAS_MASK, mmap=False).astype(bool, copy=False)
    n = len(images)
    if len(labels) != n or (has_mask is not None and len(has_mask) != n):
        raise DatasetError(f"{path}: the cache is inconsistent: {n} images, {len(labels)} labels")
    columns = _manifest_columns(path, n)
    meta = {"has_mask": has_mask, "sha1": columns["sha1"],
            "original_size": columns["original_size"], "summary": summary, "path": str(path)}
    return ImageSet(images=images, labels=labels, masks=masks,
                    patients=columns["patients"],
                    source=summary.get("source", summary.get("dataset", "cache")),
                    names=columns["names"], meta=meta)
