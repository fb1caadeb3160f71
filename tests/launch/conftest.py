"""Fixtures of the launch tests: one private SLURM cluster for the whole session, and helpers to
wait on it with timeouts (a job that dies before reporting must fail a test, not hang it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


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


def job_state(job_id: str) -> str:
    """SLURM state of a job ('' once it has left the queue; there is no accounting here)."""
    done = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                          text=True, timeout=30)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
