"""The evaluation section: cross-domain test sets for ``python -m mmdist.evaluate``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mmdist.config.errors import check
from mmdist.config.data_sources import SourceConfig

@dataclass
class CrossDomainSetConfig(SourceConfig):
    """One cross-domain test set: a whole dataset from another source, evaluated (never trained
    on) for one task. The source keys (kind, path, count, domain) are those of data.classification."""

    name: str = ""
    """Short name of the set in eval/metrics.json and the tables (letters, digits, '_', '-', '.')."""
    task: Literal["classification", "segmentation"] = "segmentation"
    """Which head it tests: classification needs labels, segmentation needs masks."""
    exclude: Literal["none", "unlabeled"] = "none"
    """'unlabeled' leaves out every image of a patient in the run's unlabeled pool
    (data.unlabeled; with data.unlabeled.holdout_fraction keeping patients out of it), for a set
    drawn from the pool's own dataset. With 'none', a set that shares a patient with the pool is
    refused when it is built, so a test set never holds an image the run trained on."""

    def check_at(self, key: str) -> None:
        super().check_at(key)
        check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.name)), f"{key}.name",
               f"must be a non-empty name of letters, digits, '_', '-' or '.', got {self.name!r}")


IN_DOMAIN_TEST_SETS = ("classification", "segmentation")
"""Names of the in-domain test sets (the test splits of data.classification/segmentation)."""


@dataclass
class EvaluationConfig:
    """``python -m mmdist.evaluate``: which test sets besides the in-domain test splits."""

    cross_domain: list[CrossDomainSetConfig] = field(default_factory=list)
    """Cross-domain test sets, e.g. [{name: shenzhen, task: segmentation, kind: shenzhen,
    path: /data/shenzhen-lungseg}]."""
    examples: int = 8
    """Images shown in the boundary-overlay and saliency figures (per set / per class)."""

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.cross_domain):
            entry.check_at(f"evaluation.cross_domain[{i}]")
        names = [t.name for t in self.cross_domain]
        for i, name in enumerate(names):
            check(names.count(name) == 1 and name not in IN_DOMAIN_TEST_SETS,
                  f"evaluation.cross_domain[{i}].name",
                  f"test set name {name!r} is used twice or is an in-domain set's name "
                  f"{IN_DOMAIN_TEST_SETS}")
        check(1 <= self.examples <= 64, "evaluation.examples", "must be in [1, 64]")
