"""From the config's data section to the two tasks' ImageSets and splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mmdist.data.imageset import ImageSet
from mmdist.data.splits import Split, make_split
from mmdist.data.synthetic import synthetic_imageset

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


def build_task_data(config, tasks: tuple[str, ...] = ("classification", "segmentation")) -> TaskData:
    """The ImageSets and seeded splits of the ``tasks`` named (a variant's trainer names only the
    tasks it trains; see VariantSpec.tasks)."""
    budget = config.data.budget
    out = {"classification": None, "segmentation": None}
    for task in tasks:
        source_config = getattr(config.data, task)
        imageset = load_imageset(source_config, config.data.image_size, task)
        if task == "classification":
            split = make_split(imageset, budget.classification_labeled, budget.val_fraction,
                               budget.test_fraction, config.seed, need="label")
        else:
            if imageset.masks is None:
                raise ValueError(f"data.segmentation: source {imageset.source!r} has no masks")
            split = make_split(imageset, budget.segmentation_labeled, budget.val_fraction,
                               budget.test_fraction, config.seed, need="mask")
        out[task] = TaskSplit(imageset, split)
    return TaskData(**out)
