"""A sweep's state: SWEEP_DIR/sweep.json, and what each run's status is.

Each run lives in SWEEP_DIR/<run name> (its own config.yaml, checkpoints, summary.json,
eval/metrics.json when the spec evaluates, and TensorBoard run with hparams), so
``tensorboard --logdir SWEEP_DIR`` shows one entry per run. SWEEP_DIR/sweep.json records the
spec's cells (which run stands for each: what ``--collect`` tabulates) and which job ran which run.
A run is 'completed' when its summary.json says so and, when the spec evaluates, its
eval/metrics.json exists; 'queued' while its job is pending or running; otherwise 'failed' or
'missing', and submitting the spec again resubmits it (mmdist.launch.sweep_submit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmdist.config.errors import InputError
from mmdist.launch.pack import run_completed
from mmdist.launch.submit import job_in_queue
from mmdist.launch.sweep_spec import Run, SweepSpec

STATE_FILE = "sweep.json"


def run_status(run: Run, state: dict, evaluate: str = "none") -> str:
    """'completed', 'queued' (its job is pending or running), 'failed' (its job is gone without
    a completed run, or without the evaluation the spec asks for) or 'missing' (never submitted)."""
    if run_completed(run.run_dir, evaluate):
        return "completed"
    entry = state.get("runs", {}).get(run.name, {})
    job_id = entry.get("job_id")
    if job_id is None:
        return "missing"
    if entry.get("local"):  # a --local run's job id is its process id
        return "queued" if _process_alive(int(job_id)) else "failed"
    return "queued" if job_in_queue(job_id) else "failed"


def sweep_statuses(spec: SweepSpec) -> dict[str, str]:
    """run name -> run_status, from SWEEP_DIR/sweep.json and the run folders."""
    state = read_state(spec.output_dir)
    return {run.name: run_status(run, state, spec.evaluate) for run in spec.runs}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(sweep_dir: Path) -> dict:
    """SWEEP_DIR/sweep.json: {'cells': {cell: {'values', 'run'}}, 'runs': {run: {'job_id',
    'values', 'local'}}, 'spec', 'name'}; an empty one when the sweep never ran."""
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        return {"cells": {}, "runs": {}}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); remove it to start the sweep's "
                         "bookkeeping afresh") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a sweep's state (a JSON object with 'cells' and 'runs'); "
                         "remove it to start the sweep's bookkeeping afresh")
    if "runs" not in state:
        # Written before cells could share a run: each cell was its own run, of the same name.
        state["runs"] = state.get("cells", {})
        state["cells"] = {name: {"values": entry.get("values", {}), "run": name}
                          for name, entry in state["runs"].items()}
    return state


def write_state(sweep_dir: Path, state: dict) -> None:
    path = Path(sweep_dir) / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)
