"""One SourceConfig to its ImageSet: the built-in generator, a prepared cache, or a raw dataset
folder prepared on first use (mmdist.data.sources builds the tasks from these)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mmdist.config import require_data_root
from mmdist.data.imageset import ImageSet
from mmdist.data.records import DatasetError
from mmdist.data.synthetic import synthetic_catalog, synthetic_imageset

# The built-in data are fixed per task (the run seed varies the splits, as in the paper).
SYNTHETIC_DATA_SEEDS = {"classification": 1001, "segmentation": 2002, "unlabeled": 3003}


def source_key(source_config, task: str) -> str:
    """The config key a source lives at, for errors: data.<task>, or the cross-domain entry."""
    name = getattr(source_config, "name", "")
    return f"evaluation.cross_domain {name!r}" if name else f"data.{task}"


def default_cache_dir(source_config, image_size: int) -> Path:
    """Where a raw dataset folder is prepared on first use (~/.cache/mmdist), keyed by the
    absolute source path, the dataset kind, the size and the adapter options."""
    src = str(Path(source_config.path).resolve())
    options = json.dumps(source_config.options, sort_keys=True, default=str)
    key = hashlib.sha1(f"{source_config.kind}|{src}|{image_size}|{options}".encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "mmdist" / f"{source_config.kind}-{key}-{image_size}"


def load_imageset(source_config, image_size: int, task: str) -> ImageSet:
    """Build (or prepare and memory-map) one task's ImageSet from its SourceConfig.
    ``task``: 'classification', 'segmentation' or 'unlabeled' (data.unlabeled)."""
    kind = source_config.kind
    if kind == "synthetic":
        return synthetic_imageset(source_config.count, image_size, SYNTHETIC_DATA_SEEDS[task],
                                  source_config.domain, source=f"synthetic-{task}")
    require_data_root(source_config.path, f"{source_key(source_config, task)}.path",
                      DatasetError)
    from mmdist.data import cache, prepare  # the real-data layer, imported only when used

    if kind == "cache":
        return cache.load_cache(source_config.path)
    out = default_cache_dir(source_config, image_size)
    prepare.prepare_dataset(kind, source_config.path, out, size=image_size,
                            workers=source_config.prepare_workers, **source_config.options)
    return cache.load_cache(out)


def load_catalog(source_config, image_size: int, task: str) -> ImageSet:
    """The ImageSet of a source for split arithmetic only: the built-in data without their
    pixels (labels, patients, mask flags), a cache or prepared folder memory-mapped (no pixel is
    read)."""
    if source_config.kind == "synthetic":
        return synthetic_catalog(source_config.count, image_size, SYNTHETIC_DATA_SEEDS[task],
                                 source=f"synthetic-{task}")
    return load_imageset(source_config, image_size, task)
