"""From the config's data section to the tasks' ImageSets and splits, and what one epoch is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mmdist.config import require_data_root
from mmdist.data.imageset import ImageSet
from mmdist.data.records import DatasetError
from mmdist.data.source_imageset import load_catalog, load_imageset
from mmdist.data.splits import Split, make_split, split_by_patient
from mmdist.data.unlabeled import UnlabeledPool, join_pool, load_pool, reads_pool


@dataclass
class TaskSplit:
    imageset: ImageSet
    split: Split


@dataclass
class TaskData:
    classification: Optional[TaskSplit]
    segmentation: Optional[TaskSplit]
    unlabeled_pool: Optional[UnlabeledPool] = None
    """data.unlabeled, when the variant reads it (joined into ``classification``)."""


def check_source_paths(config) -> None:
    """Every dataset folder the config names exists (DatasetError naming the key otherwise):
    checked where a run is submitted, before it waits in a queue only to fail at start."""
    named = [(f"data.{task}", getattr(config.data, task)) for task in ("classification",
                                                                        "segmentation",
                                                                        "unlabeled")]
    named += [(f"evaluation.cross_domain[{i}]", s) for i, s in
              enumerate(config.evaluation.cross_domain)]
    for key, source in named:
        if source is None or source.kind == "synthetic":
            continue
        require_data_root(source.path, f"{key}.path", DatasetError)
        if not Path(source.path).exists():
            raise DatasetError(f"{key}.path: {source.kind} dataset folder not found: "
                               f"{source.path}")


@dataclass(frozen=True)
class EpochPool:
    """The training images whose one pass is an epoch, for every variant of a config."""

    images: int
    description: str


def epoch_pool(config, task_data: Optional[TaskData] = None) -> EpochPool:
    """What one epoch is: the training images of the unlabeled pool when it has its own source
    (data.unlabeled), else the classification training split (labeled and unlabeled together:
    the split does not depend on the budget), else the segmentation training split when the
    config has no classification source. It depends on the data sources only, never on the
    variant or the label budgets, so every variant of a sweep cell gets the same schedule (a
    variant that does not read data.unlabeled still counts it: a cache is memory-mapped, a raw
    folder prepared).

    ``task_data`` lends what it holds already; otherwise the source is read without its pixels
    where that is possible (the built-in data) or memory-mapped (a cache).
    """
    if config.data.unlabeled is not None:
        pool = getattr(task_data, "unlabeled_pool", None) or load_pool(config, pixels=False)
        count, source = len(pool.train), pool.imageset.source
        return EpochPool(count, f"the unlabeled pool of {source} ({count} images)")
    task = "classification" if config.data.classification is not None else "segmentation"
    built = getattr(task_data, task, None) if task_data is not None else None
    if built is not None:
        train, source = len(built.split.train), built.imageset.source
    else:
        imageset = load_catalog(getattr(config.data, task), config.data.image_size, task)
        train_indices, _, _ = split_by_patient(imageset, *config.data.budget.fractions(task),
                                               config.seed)
        train, source = len(train_indices), imageset.source
    return EpochPool(train, f"the {task} training split of {source} ({train} images)")


def build_task_data(config, tasks: tuple[str, ...] = ("classification", "segmentation")) -> TaskData:
    """The ImageSets and seeded splits of the ``tasks`` named (a variant's trainer names only the
    tasks it trains; see VariantSpec.tasks). data.unlabeled is loaded and joined into the
    classification task only when the config's variant reads unlabeled classification images."""
    budget = config.data.budget
    out = {"classification": None, "segmentation": None}
    pool = None
    for task in tasks:
        source_config = getattr(config.data, task)
        if source_config is None:
            raise DatasetError(f"data.{task}: the config has no {task} source")
        imageset = load_imageset(source_config, config.data.image_size, task)
        val_fraction, test_fraction = budget.fractions(task)
        if task == "classification":
            split = make_split(imageset, budget.classification_labeled, val_fraction,
                               test_fraction, config.seed, need="label")
            if config.data.unlabeled is not None and reads_pool(config):
                pool = load_pool(config)
                imageset, split = join_pool(imageset, split, pool)
        else:
            if imageset.masks is None:
                raise DatasetError(f"data.segmentation: source {imageset.source!r} has no masks")
            split = make_split(imageset, budget.segmentation_labeled, val_fraction,
                               test_fraction, config.seed, need="mask")
        out[task] = TaskSplit(imageset, split)
    return TaskData(**out, unlabeled_pool=pool)
