"""Evaluate a trained run on every test set its config names; write metrics, tables and plots.

Test sets: the in-domain test splits of data.classification and data.segmentation (named by
their dataset, e.g. 'kermany-pneumonia-224', for the heads the variant has) and every entry of
evaluation.cross_domain (a whole dataset from another source). Every set is checked against the
run's training images (mmdist.data.audit: by pixel content, and by patient within one source);
one that shares any is flagged on stderr and in metrics.json ('overlap', 'warnings'). Per set, each rank runs its slice
``indices[rank::world]`` (uneven lengths, no padding), scores its own images, and one gather merges
the per-image rows (mmdist.evaluation.metrics), so any number of ranks gives the one-process result.

The checkpoint is RUN_DIR/checkpoints/best.pt when the run kept one (trainer.select_by), else its
latest; its EMA weights when it has them (model.ema_decay), else the raw ones (``weights``).

Rank 0 writes, under RUN_DIR/eval/ (or ``out_dir``):
  metrics.json          the checkpoint, its step, the weights evaluated ('ema' or 'raw'), the
                        selection that chose it (metric, value; null for a step checkpoint),
                        per test set: kind, domain, source, image count, its overlap with the
                        training data and its metrics (the paper's, the clinical ones, HD95 and
                        ASSD; mmdist.evaluation.metrics), 'warnings' (one line each), and
                        'outputs' (the files written, which the next evaluation into the same
                        folder deletes first, so a re-run leaves none of an older one's)
  table_row.md          the run's row of the paper's Table 2 (cross-domain in brackets) and of
                        the clinical table
  per_image/<set>.csv   one row per image (scores, areas, probabilities) for later figures
  *.png                 ROC, Bland-Altman, box plots of Dice, HD95 and ASSD, boundary overlays
                        (worst, median and best image by Dice), saliency per class
and the same figures as TensorBoard images (tag eval/...) in RUN_DIR/tb at the checkpoint's step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from mmdist.config import Config, load_config
from mmdist.data.audit import overlap_warning, training_fingerprint, training_overlap
from mmdist.data.imageset import NO_LABEL, ImageSet
from mmdist.data.records import DatasetError
from mmdist.data.row_reads import gather_rows
from mmdist.data.source_imageset import load_imageset
from mmdist.data.splits import mask_flags
from mmdist.data.step_batch import to_model_input
from mmdist.data.synthetic import synthetic_imageset
from mmdist.data.task_data import build_task_data
from mmdist.data.unlabeled import exclude_pool_patients
from mmdist.engine.devices import resolve_device
from mmdist.engine.validation import single_class_warning
from mmdist.evaluation.figures import examples_of, write_plots
from mmdist.evaluation.metrics import (
    PerImageRecords, classification_metrics, segmentation_metrics, segmentation_scores)
from mmdist.evaluation.surface import surface_scores
from mmdist.evaluation.tables import CLINICAL_HEADER, PAPER_HEADER, clinical_row, paper_row
from mmdist.evaluation.trained_model import default_checkpoint, load_model, selection_of
from mmdist.model import MultiMixNet


@dataclass
class EvalSet:
    name: str
    kind: str
    """'classification' or 'segmentation': which head it tests."""
    domain: str
    """'in' (a test split of a training source) or 'cross' (another source, evaluated whole)."""
    imageset: ImageSet
    indices: np.ndarray
    """(M,) int64 image indices of the set inside ``imageset``."""


def _cross_domain_imageset(entry, image_size: int) -> ImageSet:
    if entry.kind == "synthetic":
        # Its own seed (from the name), so a synthetic cross-domain set never repeats the
        # training images, only their kind of anatomy in another 'scanner' domain.
        return synthetic_imageset(entry.count, image_size, zlib.crc32(entry.name.encode()),
                                  entry.domain, source=entry.name)
    return load_imageset(entry, image_size, entry.task)


def _in_domain_name(task, kind: str, taken: set[str]) -> str:
    """The dataset's name (its source), or '<source>-<kind>' when that name is taken."""
    name = str(task.imageset.source) or kind
    return name if name not in taken else f"{name}-{kind}"


def build_test_sets(config: Config, spec, task_data=None) -> list[EvalSet]:
    """The in-domain test splits and the cross-domain sets the variant's heads can be tested on.
    ``task_data``: the run's tasks when the caller has them built already."""
    can = {"classification": spec.classifier, "segmentation": spec.decoder}
    sets = []
    task_data = build_task_data(config, spec.tasks) if task_data is None else task_data
    taken = {entry.name for entry in config.evaluation.cross_domain}
    for kind in spec.tasks:
        task = getattr(task_data, kind)
        if task is not None and len(task.split.test):
            name = _in_domain_name(task, kind, taken)
            taken.add(name)
            sets.append(EvalSet(name, kind, "in", task.imageset, np.asarray(task.split.test)))
    for i, entry in enumerate(config.evaluation.cross_domain):
        if not can[entry.task]:
            continue
        imageset = _cross_domain_imageset(entry, config.data.image_size)
        where = f"evaluation.cross_domain[{i}] {entry.name!r} ({entry.path or entry.kind})"
        if entry.task == "segmentation":
            if imageset.masks is None:
                raise DatasetError(f"{where}: a segmentation test set needs masks; this source "
                                   "has none")
            # A partly masked source (meta['has_mask']) is scored on its masked images only.
            indices = np.flatnonzero(mask_flags(imageset))
            if not len(indices):
                raise DatasetError(f"{where}: a segmentation test set needs masks; none found")
        else:
            indices = np.flatnonzero(np.asarray(imageset.labels) != NO_LABEL)
            if not len(indices):
                raise DatasetError(f"{where}: a classification test set needs labels; none found")
        indices = exclude_pool_patients(config, entry, imageset, indices)
        sets.append(EvalSet(entry.name, entry.task, "cross", imageset, indices))
    return sets


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _images(imageset: ImageSet, chunk: np.ndarray, size: int) -> torch.Tensor:
    return to_model_input(gather_rows(imageset.images, chunk, size, False))


@torch.no_grad()
def score_test_set(model: MultiMixNet, test_set: EvalSet, image_size: int, batch_size: int,
                   device: torch.device) -> dict[str, np.ndarray]:
    """This rank's share of one test set, merged over ranks: per-image columns sorted by index."""
    rank, world = _rank_world()
    records = PerImageRecords()
    mine = test_set.indices[rank::world]
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        images = _images(test_set.imageset, chunk, image_size).to(device)
        if test_set.kind == "classification":
            probs = torch.softmax(model(cls_images=images).cls_logits.float(), dim=1).cpu()
            records.add(chunk, prob=probs.numpy(),
                        label=np.asarray(test_set.imageset.labels)[chunk])
        else:
            predicted = (model(seg_images=images).seg_logits.float().cpu() > 0)[:, 0]
            truth = gather_rows(test_set.imageset.masks, chunk, image_size, True)[:, 0] > 0
            records.add(chunk, **segmentation_scores(predicted, truth),
                        **surface_scores(predicted, truth))
    return records.gather().columns()


def metrics_of(test_set: EvalSet, columns: dict[str, np.ndarray]) -> dict[str, float]:
    """The paper's metrics of one test set from its merged per-image columns."""
    if not len(columns["index"]):
        raise DatasetError(f"test set {test_set.name!r} ({test_set.imageset.source}) has no "
                           "images")
    if test_set.kind == "classification":
        return classification_metrics(columns["prob"], columns["label"])
    return segmentation_metrics(columns)


def _write_per_image(path: Path, test_set: EvalSet, columns: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = test_set.imageset.names
    fields = {"index": columns["index"]}
    if names is not None:
        fields["name"] = np.asarray(names)[columns["index"]]
    for key, values in columns.items():
        if key == "index":
            continue
        if values.ndim == 2:  # class probabilities
            fields.update({f"{key}_{c}": values[:, c] for c in range(values.shape[1])})
        else:
            fields[key] = values
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(fields))
        writer.writerows(zip(*fields.values()))


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


KNOWN_OUTPUTS = ("table_row.md", "per_image", "*.png")
"""What an evaluation writes besides metrics.json, for one written before 'outputs' was kept."""


def clear_previous_outputs(eval_dir: Path) -> None:
    """Delete what an earlier evaluation wrote into ``eval_dir``: the 'outputs' its metrics.json
    lists (the known names when an older one lists none); nothing without an evaluation's
    metrics.json, so other files in a folder given as --out are left alone."""
    try:
        previous = json.loads((eval_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or "test_sets" not in previous:
        return
    listed = previous.get("outputs")
    paths = ([eval_dir / name for name in listed] if isinstance(listed, list) else
             [eval_dir / "metrics.json"] + [p for pattern in KNOWN_OUTPUTS
                                             for p in eval_dir.glob(pattern)])
    for path in paths:
        if path.resolve().parent != eval_dir.resolve():
            continue  # only entries of the folder itself, whatever a metrics.json says
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _leak_checks(task_data, results) -> tuple[dict, list[str]]:
    """{set name: overlap with the training data} and one warning line per leaking set."""
    overlaps, lines = {}, []
    fingerprint = training_fingerprint(task_data)
    for t, _ in results:
        overlaps[t.name] = training_overlap(task_data, t.imageset, t.indices, fingerprint)
        line = overlap_warning(t.name, overlaps[t.name])
        if line:
            lines.append(line)
    return overlaps, lines


def evaluate_run(run_dir: str | Path, checkpoint: Optional[str | Path] = None,
                 overrides: list[str] | tuple[str, ...] = (), plots_on: bool = True,
                 weights: str = "auto", out_dir: Optional[str | Path] = None) -> dict:
    """Evaluate ``run_dir`` with ``checkpoint`` (default: default_checkpoint) and its ``weights``
    (see weights_of) into ``out_dir`` (default RUN_DIR/eval); see the module docstring.

    Call on every rank when a process group is initialised. Returns the metrics.json content.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml", overrides)
    checkpoint = default_checkpoint(run_dir) if checkpoint is None else checkpoint
    rank, world = _rank_world()
    device = resolve_device(config.engine.device, int(os.environ.get("LOCAL_RANK", "0")))
    model, _, state = load_model(checkpoint, device, weights, run_dir)
    spec = model.spec
    task_data = build_task_data(config, spec.tasks)
    test_sets = build_test_sets(config, spec, task_data)
    size, batch = config.data.image_size, config.data.eval_batch_size
    results = [(t, score_test_set(model, t, size, batch, device)) for t in test_sets]
    overlaps, warning_lines = _leak_checks(task_data, results) if rank == 0 else ({}, [])
    for t, c in results:
        if t.kind == "classification":
            counts = np.bincount(c["prob"].argmax(axis=1), minlength=2)
            line = single_class_warning(counts, f"test set {t.name!r}")
            warning_lines += [line] if line else []
    summary = {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint), "step": int(state.get("step", 0)),
        "weights": state["weights_used"], "selection": selection_of(state),
        "variant": config.model.variant,
        "classification_labeled": str(config.data.budget.classification_labeled),
        "segmentation_labeled": str(config.data.budget.segmentation_labeled),
        "seed": config.seed, "image_size": size, "ranks": world,
        "test_sets": {t.name: {"kind": t.kind, "domain": t.domain, "source": t.imageset.source,
                               "n_images": int(len(c["index"])),
                               "overlap": overlaps.get(t.name),
                               "metrics": metrics_of(t, c)} for t, c in results},
        "warnings": warning_lines,
    }
    summary = _json_safe(summary)
    if rank == 0:
        eval_dir = Path(out_dir) if out_dir is not None else run_dir / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        clear_previous_outputs(eval_dir)
        written = []
        for t, c in results:
            written.append(eval_dir / "per_image" / f"{t.name}.csv")
            _write_per_image(written[-1], t, c)
        written.append(eval_dir / "table_row.md")
        written[-1].write_text(
            PAPER_HEADER + paper_row(config.model.variant, summary["classification_labeled"],
                                     summary["segmentation_labeled"], summary["test_sets"])
            + "\n" + CLINICAL_HEADER
            + clinical_row(config.model.variant, summary["classification_labeled"],
                           summary["segmentation_labeled"], summary["test_sets"]))
        if plots_on and results:
            from torch.utils.tensorboard import SummaryWriter

            examples = {t.name: examples_of(model, t, c, config.evaluation.examples, size, device)
                        for t, c in results}
            writer = SummaryWriter(str(run_dir / "tb"))
            try:
                written += write_plots(eval_dir, results, examples, writer, summary["step"])
            finally:
                writer.close()
        summary["outputs"] = sorted({str(p.relative_to(eval_dir).parts[0]) for p in written}
                                    | {"metrics.json"})
        tmp = eval_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(eval_dir / "metrics.json")
    return summary
