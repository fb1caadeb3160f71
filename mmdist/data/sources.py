"""From the config's data section to the two tasks' ImageSets and splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mmdist.data.imageset import ImageSet
from mmdist.data.records import DatasetError
from mmdist.data.splits import Split, make_split, split_by_patient
from mmdist.data.synthetic import synthetic_catalog, synthetic_imageset

# The built-in data are fixed per task (the run seed varies the splits, as in the paper).
SYNTHETIC_DATA_SEEDS = {"classification": 1001, "segmentation": 2002}


@dataclass
class TaskSplit:
    imageset: ImageSet
    split: Split


@dataclass
class TaskData:
    classification: Optional[TaskSplit]
    segmentation: Optional[TaskSplit]


def default_cache_dir(source_config, image_size: int) -> Path:
    """Where a raw dataset folder is prepared on first use (~/.cache/mmdist), keyed by the
    absolute source path, the dataset kind, the size and the adapter options."""
    src = str(Path(source_config.path).resolve())
    options = json.dumps(source_config.options, sort_keys=True, default=str)
    key = hashlib.sha1(f"{source_config.kind}|{src}|{image_size}|{options}".encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "mmdist" / f"{source_config.kind}-{key}-{image_size}"


def check_source_paths(config) -> None:
    """Every dataset folder the config names exists (DatasetError naming the key otherwise):
    checked where a run is submitted, before it waits in a queue only to fail at start."""
    named = [(f"data.{task}", getattr(config.data, task)) for task in ("classification",
                                                                        "segmentation")]
    named += [(f"evaluation.cross_domain[{i}]", s) for i, s in
              enumerate(config.evaluation.cross_domain)]
    for key, source in named:
        if source is not None and source.kind != "synthetic" and not Path(source.path).exists():
            raise DatasetError(f"{key}.path: {source.kind} dataset folder not found: "
                               f"{source.path}")


def load_imageset(source_config, image_size: int, task: str) -> ImageSet:
    """Build (or prepare and memory-map) one task's ImageSet from its SourceConfig."""
    kind = source_config.kind
    if kind == "synthetic":
        return synthetic_imageset(source_config.count, image_size, SYNTHETIC_DATA_SEEDS[task],
                                  source_config.domain, source=f"synthetic-{task}")
    from mmdist.data import cache, prepare  # the real-data layer, imported only when used

    if kind == "cache":
        return cache.load_cache(source_config.path)
    out = default_cache_dir(source_config, image_size)
    prepare.prepare_dataset(kind, source_config.path, out, size=image_size,
                            workers=source_config.prepare_workers, **source_config.options)
    return cache.load_cache(out)


@dataclass(frozen=True)
class EpochPool:
    """The training images whose one pass is an epoch, for every variant of a config."""

    images: int
    description: str


def epoch_pool(config, task_data: Optional[TaskData] = None) -> EpochPool:
    """What one epoch is: the classification training split (labeled and unlabeled together:
    the split does not depend on the budget), or the segmentation training split when the
    config has no classification source. It depends on the data sources only, never on the
    variant or the label budgets, so every variant of a sweep cell gets the same schedule.

    ``task_data`` lends its split when it holds that task already; otherwise the source is read
    without its pixels where that is possible (the built-in data) or memory-mapped (a cache).
    """
    task = "classification" if config.data.classification is not None else "segmentation"
    built = getattr(task_data, task, None) if task_data is not None else None
    if built is not None:
        train, source = len(built.split.train), built.imageset.source
    else:
        source_config = getattr(config.data, task)
        if source_config.kind == "synthetic":
            imageset = synthetic_catalog(source_config.count, config.data.image_size,
                                         SYNTHETIC_DATA_SEEDS[task], source=f"synthetic-{task}")
        else:
            imageset = load_imageset(source_config, config.data.image_size, task)
        budget = config.data.budget
        train_indices, _, _ = split_by_patient(imageset, budget.val_fraction, budget.test_fraction,
                                               config.seed)
        train, source = len(train_indices), imageset.source
    return EpochPool(train, f"the {task} training split of {source} ({train} images)")


def build_task_data(config, tasks: tuple[str, ...] = ("classification", "segmentation")) -> TaskData:
    """The ImageSets and seeded splits of the ``tasks`` named (a variant's trainer names only the
    tasks it trains; see VariantSpec.tasks)."""
    budget = config.data.budget
    out = {"classification": None, "segmentation": None}
    for task in tasks:
        source_config = getattr(config.data, task)
        if source_config is None:
            raise DatasetError(f"data.{task}: the config has no {task} source")
        imageset = load_imageset(source_config, config.data.image_size, task)
        if task == "classification":
            split = make_split(imageset, budget.classification_labeled, budget.val_fraction,
                               budget.test_fraction, config.seed, need="label")
        else:
            if imageset.masks is None:
                raise DatasetError(f"data.segmentation: source {imageset.source!r} has no masks")
            split = make_split(imageset, budget.segmentation_labeled, budget.val_fraction,
                               budget.test_fraction, config.seed, need="mask")
        out[task] = TaskSplit(imageset, split)
    return TaskData(**out)
