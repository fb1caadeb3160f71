"""The three one-node launchers start two ranks that train, validate and write one summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def launch_env() -> dict:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_launcher(script: str, run_dir: Path, *overrides: str, timeout: float = 400):
    command = [str(REPO / "launch" / script), "configs/tiny.yaml", f"output_dir={run_dir}",
               "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.image_log_every=0",
               *overrides]
    return subprocess.run(command, cwd=REPO, env=launch_env(), capture_output=True, text=True,
                          timeout=timeout)


def check_completed_run(done, run_dir: Path, steps: int = 4) -> dict:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    summaries = sorted(run_dir.rglob("summary.json"))
    assert summaries == [run_dir / "summary.json"], summaries
    summary = json.loads(summaries[0].read_text())
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert summary["ranks"] == 2
    assert 0.0 <= summary["val_dice"] <= 1.0
    # Only rank 0 printed the closing summary line.
    assert done.stdout.count('"status": "completed"') == 1, done.stdout[-3000:]
    return summary


# launch/torchrun.sh is exercised by test_distributed_failure.py (the resumed run).


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.timeout(450)
def test_mpirun_two_ranks(tmp_path):
    if shutil.which("mpirun") is None:
        pytest.skip("Open MPI's mpirun is not installed (make system-deps installs it)")
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    done = run_launcher("mpirun.sh", tmp_path / "run")
    check_completed_run(done, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_deepspeed_launcher_two_ranks(tmp_path):
    run_dir = tmp_path / "run"
    done = run_launcher("deepspeed.sh", run_dir)
    check_completed_run(done, run_dir)
    # ZeRO shards per step beside the weights file that evaluation reads; both rotated together.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == [
        "step_00000002", "step_00000002.pt", "step_00000004", "step_00000004.pt"]
