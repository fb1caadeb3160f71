"""slurm/train.sh against the real test cluster: a run completes, and a USR2 mid-run leads to a
checkpoint, a requeue and a resumed run that ends at the same step count as an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, job_state, wait_until
from tensorboard_events import hparams_of, read_events, scalar_steps

SCRIPT = REPO / "slurm" / "train.sh"


def sbatch(tmp_path: Path, *overrides: str) -> str:
    """Submit slurm/train.sh configs/tiny.yaml from the repository root; returns the job id.

    The resource flags override the script's #SBATCH defaults (as a user would): the test nodes
    have 2 CPUs each, and 5 minutes is long enough that USR2@90 cannot fire on its own during the
    test (the controller may send it up to a minute early)."""
    done = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", "--time=5",
         f"--output={tmp_path}/slurm-%j.out", f"--error={tmp_path}/slurm-%j.out",
         str(SCRIPT), "configs/tiny.yaml", *overrides,
         "trainer.threads=1", "trainer.progress=false", "engine.device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def summary_of(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_train_sh_without_arguments_prints_usage():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "usage: sbatch slurm/train.sh CONFIG" in done.stderr


@pytest.mark.slurm
def test_sbatch_train_sh_completes_with_tensorboard(slurm, tmp_path):
    run_dir = tmp_path / "run"
    job = sbatch(tmp_path, f"output_dir={run_dir}")
    wait_until(lambda: not job_state(job), 240, f"job {job} to finish")
    log = (tmp_path / f"slurm-{job}.out").read_text()
    summary = summary_of(run_dir)
    assert summary.get("status") == "completed", log
    assert summary["steps"] == 8 and summary["start_step"] == 0
    assert f"train.sh: job {job} restart 0" in log

    events = read_events(run_dir / "tb")
    tags = events.Tags()
    for tag in ("train/total", "train/dice", "train/ce", "perf/lr", "perf/images_per_s", "val/val_dice"):
        assert tag in tags["scalars"], tag
    assert scalar_steps(events, "train/total") == [2, 4, 6, 8]
    assert {"images/seg_input", "images/seg_predicted", "images/saliency"} <= set(tags["images"])
    hparams = hparams_of(events)
    assert hparams["variant"] == "multimix" and hparams["max_steps"] == 8
    assert "hparam/val_dice" in tags["scalars"]


@pytest.mark.slurm
@pytest.mark.slow
def test_usr2_checkpoints_requeues_and_resumes(slurm, tmp_path):
    run_dir = tmp_path / "run"
    steps = 40
    job = sbatch(tmp_path, f"output_dir={run_dir}", f"trainer.max_steps={steps}",
                 "trainer.checkpoint_every=4", "trainer.keep_checkpoints=50", "trainer.image_log_every=0")
    first = run_dir / "checkpoints" / "step_00000004.pt"
    wait_until(first.is_file, 240, "the first checkpoint")
    assert job_state(job) == "RUNNING"
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    wait_until(lambda: summary_of(run_dir).get("status") == "completed", 300,
               "the requeued run to complete")
    wait_until(lambda: not job_state(job), 60, f"job {job} to leave the queue")
    log = (tmp_path / f"slurm-{job}.out").read_text()
    summary = summary_of(run_dir)
    # Requeued once (the same job id, restart count 1) and resumed from the step it stopped at.
    assert f"requeueing job {job}" in log
    assert f"train.sh: job {job} restart 1" in log, log
    assert 4 <= summary["start_step"] < steps, log
    assert summary["steps"] == steps
    saved = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert summary["start_step"] in saved and saved[-1] == steps
    # The two attempts together logged every step once, like one uninterrupted run.
    events = read_events(run_dir / "tb")
    assert scalar_steps(events, "train/total") == list(range(2, steps + 1, 2))
