"""slurm/train.sh against the real test cluster: a run completes, and a USR2 mid-run leads to a
checkpoint, a requeue and a resumed run that ends at the same step count as an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurm_cluster import REPO, job_state, wait_until
from tensorboard_events import hparams_of, read_events, scalar_steps

SCRIPT = REPO / "slurm" / "train.sh"


def sbatch(tmp_path: Path, *overrides: str, flags: tuple[str, ...] = ()) -> str:
    """Submit slurm/train.sh configs/tiny.yaml from the repository root; returns the job id.

    The resource flags override the script's #SBATCH defaults (as a user would): the test nodes
    have 2 CPUs each, and 5 minutes is long enough that USR2@90 cannot fire on its own during the
    test (the controller may send it up to a minute early)."""
    done = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", "--time=5", *flags,
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
@pytest.mark.slow
def test_sbatch_runs_complete_and_usr2_requeues_and_resumes(slurm, tmp_path):
    """Three sbatch jobs side by side: a plain tiny run that completes with its TensorBoard
    events, the same as 2-rank DDP over both nodes, and a longer run that gets USR2 after its
    first checkpoint, stops, is
    requeued by the script and resumes to the same step count as an uninterrupted run. The second
    run assembles batches in a DataLoader worker, which receives the signal too (SLURM signals
    every process of the step) and must survive it."""
    plain_dir, preempted_dir, steps = tmp_path / "plain", tmp_path / "preempted", 40
    plain = sbatch(tmp_path, f"output_dir={plain_dir}")
    ddp_dir = tmp_path / "ddp"
    ddp = sbatch(tmp_path, f"output_dir={ddp_dir}", "engine.strategy=ddp",
                 flags=("--nodes=2", "--ntasks-per-node=1"))
    preempted = sbatch(tmp_path, f"output_dir={preempted_dir}", f"trainer.max_steps={steps}",
                       "trainer.checkpoint_every=4", "trainer.keep_checkpoints=50",
                       "trainer.image_log_every=0", "data.workers=1")
    wait_until((preempted_dir / "checkpoints" / "step_00000004.pt").is_file, 240,
               "the first checkpoint")
    assert job_state(preempted) == "RUNNING"
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True, timeout=30)
    wait_until(lambda: not any(map(job_state, (plain, ddp, preempted)))
               and summary_of(preempted_dir).get("status") == "completed", 300,
               "the three jobs to finish")

    # The plain run: summary.json and TensorBoard scalars, images and hparams read back.
    log = (tmp_path / f"slurm-{plain}.out").read_text()
    summary = summary_of(plain_dir)
    assert summary.get("status") == "completed", log
    assert summary["steps"] == 8 and summary["start_step"] == 0
    assert f"train.sh: job {plain} restart 0" in log and "requeueing" not in log
    events = read_events(plain_dir / "tb")
    tags = events.Tags()
    for tag in ("train/total", "train/dice", "train/ce", "perf/lr", "perf/images_per_s", "val/dice"):
        assert tag in tags["scalars"], tag
    assert scalar_steps(events, "train/total") == [2, 4, 6, 8]
    assert {"images/seg_input", "images/seg_predicted", "images/saliency"} <= set(tags["images"])
    hparams = hparams_of(events)
    assert hparams["variant"] == "multimix" and hparams["max_steps"] == 8
    assert "hparam/val_dice" in tags["scalars"]

    # The DDP run: one rank per node, started by srun from the same script.
    log = (tmp_path / f"slurm-{ddp}.out").read_text()
    summary = summary_of(ddp_dir)
    assert summary.get("status") == "completed", log
    assert summary["ranks"] == 2 and summary["steps"] == 8
    assert f"train.sh: job {ddp} restart 0 on n[1-2] (2 tasks)" in log

    # The preempted run: requeued once (same job id, restart count 1), resumed where it stopped.
    log = (tmp_path / f"slurm-{preempted}.out").read_text()
    summary = summary_of(preempted_dir)
    assert f"requeueing job {preempted}" in log
    assert f"train.sh: job {preempted} restart 1" in log, log
    assert 4 <= summary["start_step"] < steps, log
    assert summary["steps"] == steps
    saved = sorted(int(p.stem.split("_")[1]) for p in (preempted_dir / "checkpoints").glob("step_*.pt"))
    assert summary["start_step"] in saved and saved[-1] == steps
    # The two attempts together logged every step once, like one uninterrupted run.
    assert scalar_steps(read_events(preempted_dir / "tb"), "train/total") == list(range(2, steps + 1, 2))
