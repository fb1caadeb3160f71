"""``python -m mmdist.launch``: argument errors, a local run, a 2-rank DDP job across the two
emulated nodes, and a preempted 2-rank job that submitit requeues and that resumes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_cluster import REPO, job_state, wait_until
from tensorboard_events import read_events, scalar_steps

from mmdist.launch.__main__ import main as launch_main

SMALL = ["trainer.threads=1", "trainer.progress=false", "engine.device=cpu"]


def summary_of(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_bad_arguments_are_refused_before_submitting(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert launch_main(["--nodes", "2", "--config", "configs/tiny.yaml", "engine.strategy=single",
                        f"output_dir={tmp_path}"]) == 2
    assert "engine.strategy=single, but the job has 2 ranks" in capsys.readouterr().err
    assert launch_main(["--config", "configs/tiny.yaml", "data.segmentation.kind=shenzhen",
                        f"data.segmentation.path={tmp_path}/nowhere", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"data.segmentation.path: shenzhen dataset folder not found: " \
        f"{tmp_path}/nowhere" in err
    assert launch_main(["--config", "configs/tiny.yaml", "trainer.max_stepz=3"]) == 2
    assert "trainer.max_stepz: unknown key" in capsys.readouterr().err
    assert launch_main(["--nodes", "0", "--config", "configs/tiny.yaml"]) == 2
    assert "nodes: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "submitit").exists()


@pytest.mark.slow
def test_local_runs_the_same_job_without_slurm(tmp_path, capsys, monkeypatch):
    """Two ranks (DDP over gloo) as local processes: submitit's local variables become torch's."""
    monkeypatch.chdir(REPO)
    code = launch_main(["--local", "--tasks-per-node", "2", "--config", "configs/tiny.yaml",
                        "engine.strategy=ddp", f"output_dir={tmp_path / 'run'}", *SMALL])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"TensorBoard: tensorboard --logdir {tmp_path / 'run' / 'tb'}" in out
    summary = summary_of(tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps"] == 8 and summary["ranks"] == 2


def raw_line(stream) -> str:
    """One line read byte by byte from the pipe's descriptor: a buffered readline would take the
    lines after it too, and communicate() (which reads the descriptor) would never see them."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            break
        data += chunk
    return data.decode()


@pytest.mark.slurm
@pytest.mark.slow
def test_two_node_ddp_job_survives_preemption_and_completes(slurm, tmp_path):
    """``--nodes 2 --wait`` with engine.strategy=ddp: one gloo rank per emulated node. USR2
    mid-run makes rank 0 checkpoint (rank 1 waits), submitit requeue the job, and the requeued
    job resume; ``--wait`` follows it through the requeue and exits 0 at the end."""
    run_dir, steps = tmp_path / "run", 40
    command = [sys.executable, "-m", "mmdist.launch", "--nodes", "2", "--wait", "--wait-timeout",
               "500", "--time", "10", "--config", "configs/tiny.yaml", "engine.strategy=ddp",
               f"output_dir={run_dir}", f"trainer.max_steps={steps}", "trainer.checkpoint_every=4",
               "trainer.keep_checkpoints=50", "trainer.image_log_every=0", *SMALL,
               "trainer.threads=0"]  # threads from the allocation: SLURM_CPUS_PER_TASK
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            first_line = raw_line(process.stdout)
            match = re.match(r"job:\s+(\d+) \(2 ranks on 2 nodes\)", first_line)
            assert match, first_line + process.stderr.read()
            job = match.group(1)
            wait_until((run_dir / "checkpoints" / "step_00000004.pt").is_file, 300,
                       "the first checkpoint")
            assert job_state(job) == "RUNNING"
            subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
            out, err = process.communicate(timeout=540)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, first_line + out + err
    assert f"job {job}: completed" in out
    # No --cpus-per-task: a node's CPUs (2, from sinfo) over its one rank, and the rank's torch
    # threads follow the allocation.
    assert "cpus/rank:   2 (2 CPUs per node (sinfo) / 1 rank(s) per node" in out, out
    summary = summary_of(run_dir)
    assert summary["status"] == "completed" and summary["ranks"] == 2
    assert 4 <= summary["start_step"] < steps and summary["steps"] == steps
    folder = run_dir / "submitit"
    logs = {task: (folder / f"{job}_{task}_log.out").read_text() +
            (folder / f"{job}_{task}_log.err").read_text() for task in (0, 1)}
    assert "--cpus-per-task=2" in (folder / f"{job}_submission.sh").read_text()
    assert "2 CPU thread(s) per rank (SLURM_CPUS_PER_TASK)" in logs[0], logs[0][-2000:]
    # One rank per emulated node, in both attempts.
    assert logs[0].count("node=0(2), global_rank=0(2)") == 2, logs[0]
    assert logs[1].count("node=1(2), global_rank=1(2)") == 2, logs[1]
    # Rank 0 checkpointed and requeued; rank 1 did neither.
    assert "Calling checkpoint method" in logs[0] and f"Requeued job {job}" in logs[0]
    assert "Requeued job" not in logs[1]
    assert scalar_steps(read_events(run_dir / "tb"), "train/total") == list(range(2, steps + 1, 2))
