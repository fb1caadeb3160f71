"""One SourceConfig to its ImageSet: the built-in generator, a prepared cache, or a raw dataset
folder prepared on first use (mmdist.data.task_data builds the tasks from these)."""

from __future__ import annotations

import hashlib
import json
import os
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


CACHE_ENV = "MMDIST_CACHE"
"""Environment variable naming the folder raw datasets are prepared into (default
~/.cache/mmdist)."""
LABEL_FILES = ("labels.csv",)
"""Label files whose content keys a folder's cache besides its csv manifest."""


def cache_root() -> Path:
    """$MMDIST_CACHE, else ~/.cache/mmdist."""
    root = os.environ.get(CACHE_ENV, "").strip()
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mmdist"


def resolved_source(source_config) -> tuple[Path, dict]:
    """(the dataset folder, resolved, and the adapter options) of a raw source, with a csv
    manifest given as a file turned into its folder and ``options['csv']``, so one dataset named
    two ways (a symlink, '..', the folder or its labels.csv) is one source."""
    path = Path(source_config.path).expanduser().resolve()
    options = dict(source_config.options)
    if source_config.kind == "csv":
        if path.is_file():
            options["csv"] = path.name
            path = path.parent
        options.setdefault("csv", "labels.csv")  # the adapter's default, named in the key
    return path, options


def _label_digest(kind: str, folder: Path, options: dict) -> str:
    """SHA-1 of the source's labels file (a csv manifest, or a labels.csv beside the images), or
    '' when it has none: a relabelled source (e.g. patient ids added) gets its own cache."""
    names = [options.get("csv", "labels.csv")] if kind == "csv" else list(LABEL_FILES)
    for name in names:
        file = folder / name
        if file.is_file():
            return hashlib.sha1(file.read_bytes()).hexdigest()
    return ""


def default_cache_dir(source_config, image_size: int) -> Path:
    """Where a raw dataset folder is prepared on first use (cache_root()), keyed by its content:
    the resolved folder, its labels file's hash, the dataset kind, the size and the adapter
    options (see resolved_source)."""
    folder, options = resolved_source(source_config)
    labels = _label_digest(source_config.kind, folder, options)
    options_text = json.dumps(options, sort_keys=True, default=str)
    key = hashlib.sha1(f"{source_config.kind}|{folder}|{labels}|{image_size}|{options_text}"
                       .encode()).hexdigest()[:12]
    return cache_root() / f"{source_config.kind}-{key}-{image_size}"


def load_imageset(source_config, image_size: int, task: str) -> ImageSet:
    """Build (or prepare and memory-map) one task's ImageSet from its SourceConfig.
    ``task``: 'classification', 'segmentation' or 'unlabeled' (data.unlabeled)."""
    kind = source_config.kind
    if kind == "synthetic":
        return synthetic_imageset(source_config.count, image_size, SYNTHETIC_DATA_SEEDS[task],
                                  source_config.domain, source=f"synthetic-{task}")
    require_data_root(source_config.path, f"{source_key(source_config, task)}.path",
                      DatasetError)
    from mmdist.data import cache, cache_writer  # the real-data layer, imported only when used

    if kind == "cache":
        return cache.load_cache(source_config.path)
    out = default_cache_dir(source_config, image_size)
    # The resolved folder, so the records (and the cache's plan) are the same however it is named.
    folder, options = resolved_source(source_config)
    cache_writer.prepare_dataset(kind, folder, out, size=image_size,
                                 workers=source_config.prepare_workers, **options)
    return cache.load_cache(out)


def load_catalog(source_config, image_size: int, task: str) -> ImageSet:
    """The ImageSet of a source for split arithmetic only: the built-in data without their
    pixels (labels, patients, mask flags), a cache or prepared folder memory-mapped (no pixel is
    read)."""
    if source_config.kind == "synthetic":
        return synthetic_catalog(source_config.count, image_size, SYNTHETIC_DATA_SEEDS[task],
                                 source=f"synthetic-{task}")
    return load_imageset(source_config, image_size, task)
