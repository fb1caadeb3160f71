"""Fixture of the launch tests: one private SLURM cluster for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402


@pytest.fixture(scope="session")
def slurm():
    """A running two-node SLURM cluster (SLURM_CONF points at it while the session lasts)."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = slurm_cluster.SlurmCluster().up()
    try:
        yield cluster
    finally:
        cluster.down()
