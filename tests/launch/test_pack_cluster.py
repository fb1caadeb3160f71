"""Packed runs on the test SLURM cluster (slurm.runs_per_gpu: 2): a packed run ends with exactly
the checkpoint it has when trained alone; a failing run leaves its neighbour finished and a
resubmission trains only the failed one; a preempted pack is requeued and every run resumes from
its own checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slurm_cluster import REPO, job_state, wait_until
from test_sweep import run_sweep, write_spec

from mmdist.config import dump_config, from_dict
from mmdist.launch.sweep_spec import load_spec
from mmdist.sweep import main as sweep_main

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PACKED = """grid:
  model.variant: [multimix, umtl]
  seed: [0, 1]
overrides:
  trainer.deterministic: true
  trainer.threads: 1
  trainer.image_log_every: 0
  engine.device: cpu
slurm: {runs_per_gpu: 2, cpus_per_task: 2, time_min: 10, array_parallelism: 2}
"""


def tensors(tree, prefix="") -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, by its path in the dict."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else (
        enumerate(tree) if isinstance(tree, (list, tuple)) else ())
    found = {}
    for key, value in items:
        found.update(tensors(value, f"{prefix}/{key}"))
    return found


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


@pytest.fixture(scope="module")
def packed_sweep(slurm, tmp_path_factory):
    """Four tiny runs in two packs of two, the second pack with umtl_seed0 unable to start (a
    file is in the way of its run folder). Returns (spec path, sweep dir, output, exit code)."""
    tmp_path = tmp_path_factory.mktemp("packed")
    spec_path = write_spec(tmp_path, PACKED)
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "umtl_seed0").write_text("in the way")
    capture = _Capture()
    code = capture.run(str(spec_path), "--output-dir", str(sweep_dir), "--wait",
                       "--wait-timeout", "600")
    return spec_path, sweep_dir, capture.out, code


class _Capture:
    """run_sweep for a module-scoped fixture (capsys is function-scoped): stdout kept here."""

    def run(self, *args: str) -> int:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = sweep_main(list(args))
        self.out = buffer.getvalue()
        return code


def test_a_packed_run_ends_with_the_checkpoint_it_has_when_trained_alone(packed_sweep, tmp_path):
    spec_path, sweep_dir, out, code = packed_sweep
    state = json.loads((sweep_dir / "sweep.json").read_text())
    first, second = (state["runs"][f"multimix_seed{s}"]["job_id"] for s in (0, 1))
    assert first == second  # one array task trained both
    lines = out.splitlines()
    assert f"multimix_seed0: completed (job {first})" in lines, out
    assert f"multimix_seed1: completed (job {first})" in lines, out
    a, b = sweep_dir / "multimix_seed0", sweep_dir / "multimix_seed1"
    # They ran side by side: each had started (config.yaml is written once its run folder is
    # checked, before training) before the other finished (summary.json is written last).
    # Checkpoint times are not compared: one run's set-up can outlast the other's 8 short steps.
    for one, other in ((a, b), (b, a)):
        assert (one / "config.yaml").stat().st_mtime < (other / "summary.json").stat().st_mtime

    # The same run alone: its config, one process, the same single thread.
    run = next(r for r in load_spec(spec_path, sweep_dir).runs if r.name == "multimix_seed0")
    config_path = tmp_path / "alone.yaml"
    dump_config(from_dict(run.config_tree), config_path)
    alone = tmp_path / "alone"
    done = subprocess.run([sys.executable, "-m", "mmdist.train", "--config", str(config_path),
                           f"output_dir={alone}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    packed = tensors(torch.load(checkpoint(a, 8), map_location="cpu", weights_only=False))
    single = tensors(torch.load(checkpoint(alone, 8), map_location="cpu", weights_only=False))
    assert sorted(packed) == sorted(single)
    assert any(key.startswith("/model/") for key in packed) and any(
        key.startswith("/optimizer/") for key in packed)
    differing = [key for key in packed if not torch.equal(packed[key], single[key])]
    assert not differing, differing[:5]


def test_a_failing_packed_run_leaves_its_neighbour_finished(packed_sweep, capsys):
    spec_path, sweep_dir, out, code = packed_sweep
    assert code == 1, out  # the sweep as a whole did not complete
    state = json.loads((sweep_dir / "sweep.json").read_text())
    job = state["runs"]["umtl_seed0"]["job_id"]
    assert job == state["runs"]["umtl_seed1"]["job_id"]
    lines = out.splitlines()
    assert f"umtl_seed0: failed (job {job})" in lines and f"umtl_seed1: completed (job {job})" \
        in lines, out
    summary = json.loads((sweep_dir / "umtl_seed1" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert "Traceback" in (sweep_dir / "submitit" / "packed" / "umtl_seed0.log").read_text()

    # Resubmitted once the folder is free: only the failed run goes out, and completes.
    wait_until(lambda: not job_state(job), 60, "the array task to leave the queue")
    (sweep_dir / "umtl_seed0").unlink()
    finished = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}
    code, out, err = run_sweep(capsys, str(spec_path), "--output-dir", str(sweep_dir), "--wait",
                               "--wait-timeout", "400")
    assert code == 0, out + err
    assert "{'completed': 3, 'failed': 1}; submitting 1, 2 per GPU" in out
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # none trained again
    again = json.loads((sweep_dir / "umtl_seed0" / "summary.json").read_text())
    assert again["status"] == "completed" and again["steps"] == 8


def test_a_preempted_pack_is_requeued_and_each_run_resumes_from_its_checkpoint(slurm, tmp_path,
                                                                               capsys):
    spec_path = write_spec(tmp_path, """grid:
  seed: [0, 1]
overrides:
  model.variant: umtl
  trainer.max_steps: 1000
  trainer.checkpoint_every: 4
  trainer.threads: 1
  trainer.image_log_every: 0
  engine.device: cpu
slurm: {runs_per_gpu: 2, cpus_per_task: 2, time_min: 10}
""")
    sweep_dir = tmp_path / "sweep"
    code, out, err = run_sweep(capsys, str(spec_path), "--output-dir", str(sweep_dir))
    assert code == 0, out + err
    job = json.loads((sweep_dir / "sweep.json").read_text())["runs"]["seed0"]["job_id"]
    runs = [sweep_dir / "seed0", sweep_dir / "seed1"]
    # A step takes ~0.05 s here, so a run is done in under a minute and its early checkpoints
    # are rotated away within a second: wait for any checkpoint of each run, not for step 4's.
    wait_until(lambda: all(any((r / "checkpoints").glob("step_*.pt")) for r in runs), 300,
               "both runs' first checkpoint", poll_s=0.2)
    assert not any((r / "summary.json").is_file() for r in runs), "a run ended before the signal"
    assert job_state(job) == "RUNNING"
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    def both_completed():
        return all((r / "summary.json").is_file() and json.loads(
            (r / "summary.json").read_text())["status"] == "completed" for r in runs)
    wait_until(lambda: both_completed() and not job_state(job), 420, "the requeued pack to end")
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        log = (sweep_dir / "submitit" / "packed" / f"{run.name}.log").read_text()
        assert summary["steps"] == 1000 and 4 <= summary["start_step"] < 1000, (summary, log)
        assert "restart 0" in log and "restart 1" in log, log
