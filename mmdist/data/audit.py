"""Leak guards: a run's split written down, and test sets checked against its training data.

``write_split`` puts RUN_DIR/split.json beside the checkpoints (the trainer calls it once, on
rank 0), so which images and patients were labelled, unlabelled, validation and test can be
audited after the fact:

    {"format": "mmdist-split/1",
     "<task>": {"source": str, "counts": {part: int},
                "patient_disjoint": bool,      # no known patient in two of train / val / test
                "labeled" | "unlabeled" | "val" | "test": [[name, patient], ...]}}

(task: 'classification', 'segmentation'; name: the image's name in its source, or '#<index>'
for the built-in data; patient: '' when unknown). ``training_overlap`` tells how many images of a
test set are training images of the run, by content (a hash of the prepared pixels, so one image
under two names or two folders is found), and how many of its patients trained, when the test
set comes from a source the run trained on (patient ids are only comparable within a source).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mmdist.data.imageset import ImageSet

FORMAT = "mmdist-split/1"
PARTS = ("labeled", "unlabeled", "val", "test")
EXAMPLES = 5
"""Shared image names a leak report lists."""


def _name(imageset: ImageSet, index: int) -> str:
    return str(imageset.names[index]) if imageset.names is not None else f"#{index}"


def split_record(task_data) -> dict:
    """The split of every task of a mmdist.data.task_data.TaskData as JSON-ready data (see the
    module docstring)."""
    out: dict = {"format": FORMAT}
    for task in ("classification", "segmentation"):
        built = getattr(task_data, task)
        if built is None:
            continue
        imageset, split = built.imageset, built.split
        patients = np.asarray(imageset.patients, dtype=object)
        entry: dict = {"source": imageset.source,
                       "counts": {part: int(len(getattr(split, part))) for part in PARTS}}
        groups = [{p for p in patients[np.asarray(idx, dtype=np.int64)] if p}
                  for idx in (split.train, split.val, split.test)]
        entry["patient_disjoint"] = not (groups[0] & groups[1] or groups[0] & groups[2]
                                         or groups[1] & groups[2])
        for part in PARTS:
            entry[part] = [[_name(imageset, int(i)), str(patients[i] or "")]
                           for i in getattr(split, part)]
        out[task] = entry
    return out


def write_split(task_data, run_dir: str | Path) -> Path:
    """Write RUN_DIR/split.json atomically; returns its path."""
    path = Path(run_dir) / "split.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(split_record(task_data), indent=1))
    os.replace(tmp, path)
    return path


def content_hashes(imageset: ImageSet, indices) -> list[bytes]:
    """16-byte BLAKE2b digests of the prepared pixels of ``imageset.images[indices]``."""
    return [hashlib.blake2b(np.ascontiguousarray(imageset.images[int(i)]).tobytes(),
                            digest_size=16).digest() for i in np.asarray(indices, dtype=np.int64)]


def _training_parts(task_data) -> list[tuple[ImageSet, np.ndarray]]:
    """(imageset, training indices) of every task: labelled and unlabelled images (the
    unlabelled pool of data.unlabeled included, as it is joined into classification)."""
    return [(built.imageset, built.split.train) for built in
            (task_data.classification, task_data.segmentation) if built is not None]


def training_fingerprint(task_data) -> dict:
    """What a test set is compared with: {'hashes': content hashes of every training image,
    'patients': {source: its training patients}} (compute once per evaluation)."""
    hashes: set[bytes] = set()
    patients: dict[str, set[str]] = {}
    for train_set, train in _training_parts(task_data):
        hashes.update(content_hashes(train_set, train))
        known = np.asarray(train_set.patients, dtype=object)[np.asarray(train, dtype=np.int64)]
        patients.setdefault(str(train_set.source), set()).update(p for p in known if p)
    return {"hashes": hashes, "patients": patients}


def training_overlap(task_data, imageset: ImageSet, indices, fingerprint=None) -> dict:
    """How a test set (``imageset.images[indices]``) overlaps the run's training data.

    Returns {'shared_images': int (test images whose pixels equal a training image's),
    'shared_patients': int (test patients that trained, same source only), 'examples': up to
    EXAMPLES names of shared images}. Both counts 0 for a clean test set. ``fingerprint``:
    training_fingerprint(task_data), when the caller checks several sets.
    """
    indices = np.asarray(indices, dtype=np.int64)
    fingerprint = fingerprint or training_fingerprint(task_data)
    shared = [int(i) for i, h in zip(indices, content_hashes(imageset, indices))
              if h in fingerprint["hashes"]]
    trained_patients = fingerprint["patients"].get(str(imageset.source), set())
    patients = np.asarray(imageset.patients, dtype=object)
    return {"shared_images": len(shared),
            "shared_patients": len({p for p in patients[indices] if p} & trained_patients),
            "examples": [_name(imageset, i) for i in shared[:EXAMPLES]]}


def overlap_warning(name: str, overlap: dict) -> str | None:
    """One line for a test set that shares images or patients with training, else None."""
    if not (overlap["shared_images"] or overlap["shared_patients"]):
        return None
    examples = ", ".join(overlap["examples"])
    return (f"test set {name!r} shares {overlap['shared_images']} image(s) and "
            f"{overlap['shared_patients']} patient(s) with this run's training data"
            + (f" (e.g. {examples})" if examples else "") + "; its scores are not held-out results")
