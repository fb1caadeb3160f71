"""The test cluster itself: a crashed session's daemons and jobs are cleaned up by the next
bring-up, without touching a cluster that is still in use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import slurm_cluster
from slurm_cluster import wait_until

CRASHING_SESSION = textwrap.dedent("""
    import os, subprocess, sys, time
    sys.path.insert(0, {folder!r})
    import slurm_cluster
    cluster = slurm_cluster.SlurmCluster().up()
    job = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 300", "--output=/dev/null"],
                         capture_output=True, text=True, check=True).stdout.strip()
    for _ in range(60):
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                               text=True).stdout.strip()
        if state == "RUNNING":
            break
        time.sleep(0.5)
    print(cluster.base, state, flush=True)
    os._exit(0)  # a crash: no down()
""")


@pytest.mark.slurm
def test_bring_up_cleans_a_crashed_cluster_and_spares_the_live_one(slurm):
    folder = str(Path(slurm_cluster.__file__).parent)
    done = subprocess.run([sys.executable, "-c", CRASHING_SESSION.format(folder=folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    base, state = done.stdout.split()
    assert state == "RUNNING"
    left = [pid for pid, b in slurm_cluster._cluster_processes().items() if b == base]
    commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in left}
    assert {"munged", "slurmctld", "slurmd", "slurmstepd", "sleep"} <= commands
    assert base in slurm_cluster.HOSTS_FILE.read_text()

    assert slurm_cluster.clean_orphans() == [base]
    assert not any(b == base for b in slurm_cluster._cluster_processes().values())
    assert not Path(base).exists()
    assert base not in slurm_cluster.HOSTS_FILE.read_text()
    # The session's cluster still schedules.
    assert str(slurm.base) in slurm_cluster.HOSTS_FILE.read_text()
    job = subprocess.run(["srun", "-N2", "hostname"], capture_output=True, text=True, timeout=60)
    assert job.returncode == 0 and len(job.stdout.split()) == 2, job.stderr
    wait_until(lambda: not slurm.queue(), 30, "the queue to empty")
