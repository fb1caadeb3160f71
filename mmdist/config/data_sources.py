"""Data sources of the config tree (data.classification, data.segmentation, data.unlabeled and the
evaluation's cross-domain sets), and the one place that says where prepared data lives.

Source paths may start with ``${MMDIST_DATA}`` (or ``$MMDIST_DATA``): the loader replaces it with
that environment variable, so the recipes in configs/paper/ name each dataset once, relative to
one folder that each machine sets. While the variable is unset the path keeps the text, so a
sweep can still be expanded and listed; the run that reads the data stops with one line naming
the key and the variable (``require_data_root``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from mmdist.config.errors import ConfigError, check

DATA_ROOT_VARIABLE = "MMDIST_DATA"
"""Environment variable: the folder that holds the prepared datasets (README, 'Reproduce the
paper on real data')."""
_DATA_ROOT = re.compile(rf"\$(?:\{{{DATA_ROOT_VARIABLE}\}}|{DATA_ROOT_VARIABLE}(?![A-Za-z0-9_]))")


def expand_data_root(path: str) -> str:
    """``path`` with ${MMDIST_DATA} replaced by the variable's value; unchanged while it is unset
    or empty."""
    root = os.environ.get(DATA_ROOT_VARIABLE, "")
    return _DATA_ROOT.sub(lambda _: root.rstrip("/") or "/", path) if root else path


def require_data_root(path: Optional[str], key: str, error: type = ConfigError) -> None:
    """Raise ``error`` naming ``key`` and the variable when ``path`` still holds
    ${MMDIST_DATA} (the variable was unset when the config was loaded)."""
    if path is not None and _DATA_ROOT.search(path):
        raise error(f"{key}: {path!r} is relative to ${DATA_ROOT_VARIABLE}, which is not "
                          f"set; export {DATA_ROOT_VARIABLE}=<folder of the prepared datasets>")


@dataclass
class SyntheticDomainConfig:
    """Knobs of one synthetic 'source' (hospital/scanner): the paper's data come from two."""

    gamma: float = 1.0
    """Intensity curve exponent applied to the rendered image."""
    contrast: float = 1.0
    brightness: float = 0.0
    noise: float = 0.03
    """Standard deviation of additive Gaussian noise, in [0, 1] intensity units."""

    def check_at(self, key: str) -> None:
        """Validate, naming the full dotted key: ``key`` is where this domain sits (e.g.
        'data.segmentation.domain'), which only the section holding it knows."""
        check(self.gamma > 0, f"{key}.gamma", "must be > 0")
        check(self.contrast > 0, f"{key}.contrast", "must be > 0")
        check(self.noise >= 0, f"{key}.noise", "must be >= 0")


@dataclass
class SourceConfig:
    """Where one task's images come from."""

    kind: Literal["synthetic", "cache", "csv", "kermany", "jsrt", "montgomery", "shenzhen", "nih",
                  "folder"] = "synthetic"
    """'synthetic' is the built-in generator; 'cache' a folder written by ``mmdist.prepare``; the
    other kinds are raw public layouts, prepared under ``~/.cache/mmdist`` on first use."""
    path: Optional[str] = None
    """Dataset folder (raw layout or prepared cache); unused for 'synthetic'. A leading
    ``${MMDIST_DATA}`` is replaced by that environment variable."""
    count: int = 600
    """Synthetic only: number of images to generate for this task (train+val+test)."""
    domain: SyntheticDomainConfig = field(default_factory=SyntheticDomainConfig)
    options: Any = field(default_factory=dict)
    """Raw kinds only: options of the layout adapter (mmdist.data.adapters), e.g. for nih
    ``{positive: Pneumonia, negative: No Finding, others: unlabeled, views: [PA],
    max_per_patient: 1}``, for kermany ``{splits: [train]}``, for csv ``{csv: labels.csv}``.
    An option the adapter does not take is reported when the source is prepared."""
    prepare_workers: int = 1
    """Raw kinds only: decoding processes when the folder is prepared on first use."""

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = expand_data_root(self.path)

    def check_at(self, key: str) -> None:
        """Validate, naming the full dotted key: ``key`` is where this source sits in the tree
        (data.classification, data.segmentation, data.unlabeled, evaluation.cross_domain[i]),
        which only the section holding it knows; that section calls this from its own
        ``__post_init__``."""
        if self.kind != "synthetic":
            check(self.path is not None, f"{key}.path", f"kind {self.kind!r} needs a dataset path")
        check(self.count >= 10, f"{key}.count", "must be >= 10")
        check(isinstance(self.options, dict) and all(isinstance(k, str) for k in self.options),
              f"{key}.options", f"must be a mapping of option names to values, got {self.options!r}")
        check(not self.options or self.kind not in ("synthetic", "cache"), f"{key}.options",
              f"kind {self.kind!r} takes no adapter options (only raw dataset kinds do)")
        check(self.prepare_workers >= 1, f"{key}.prepare_workers", "must be >= 1")
        self.domain.check_at(f"{key}.domain")


@dataclass
class UnlabeledSourceConfig(SourceConfig):
    """data.unlabeled: an unlabeled classification pool from its own source (e.g. NIH
    ChestX-ray14's 112k images beside Kermany's labeled ones). Its labels are never used for
    training: the pool's images feed the unlabeled classification streams with their labels
    hidden."""

    holdout_fraction: float = 0.0
    """Fraction of the source's images, as whole patients (seeded with the run's seed and
    stratified by the source's labels), kept out of the pool: a cross-domain test set from the
    same dataset (evaluation.cross_domain with ``exclude: unlabeled``) is then scored on them."""

    def check_at(self, key: str) -> None:
        super().check_at(key)
        check(0.0 <= self.holdout_fraction < 0.9, f"{key}.holdout_fraction", "must be in [0, 0.9)")
