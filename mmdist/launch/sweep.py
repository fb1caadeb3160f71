"""Sweeps: a grid of runs submitted as one SLURM job array, one run directory per cell.

A spec is a YAML file::

    config: ../tiny.yaml              # base run config, relative to the spec file
    output_dir: runs/sweeps/tiny      # the sweep directory (relative to where you run)
    grid:                             # dotted config keys -> values; every combination is a cell
      model.variant: [multimix, unet]
      seed: [0, 1]
    overrides:                        # the same for every cell
      trainer.max_steps: 8
    slurm:                            # mmdist.launch.submit.SlurmOptions fields
      array_parallelism: 2
      time_min: 30
    evaluate: metrics                 # after training: none | metrics | plots

Each cell runs in SWEEP_DIR/<cell name> (its own config.yaml, checkpoints, summary.json,
eval/metrics.json when the spec evaluates, and TensorBoard run with hparams), so ``tensorboard --logdir SWEEP_DIR`` shows one run per cell.
SWEEP_DIR/sweep.json records which job array task ran which cell. Submitting the same spec again
skips cells that finished (summary.json says 'completed' and, when the spec evaluates,
eval/metrics.json exists) and cells still queued or running, and
resubmits the others (failed or never run) with ``trainer.resume=true``, so a cell that died after
a checkpoint continues from it.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


from mmdist.config import (ConfigError, apply_overrides, from_dict, read_yaml_mapping,
                           read_yaml_tree)
from mmdist.launch.submit import (EVALUATE_CHOICES, SlurmOptions, TrainJob, build_executor,
                                  job_in_queue)

SPEC_KEYS = ("config", "output_dir", "grid", "overrides", "slurm", "name", "evaluate")
SHORT_NAMES = {"model.variant": "", "data.budget.classification_labeled": "c",
               "data.budget.segmentation_labeled": "s", "seed": "seed"}
"""How a grid key shows in a cell's folder name (anything else: its last component + '-')."""
STATE_FILE = "sweep.json"


@dataclass
class Cell:
    """One grid point: its folder name, its own values and its resolved run config."""

    name: str
    values: dict[str, Any]
    config_tree: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.config_tree["output_dir"])


@dataclass
class SweepSpec:
    path: Path
    name: str
    output_dir: Path
    cells: list[Cell]
    slurm: SlurmOptions
    evaluate: str = "none"


def _fail(path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {message}")


def _value_text(value: Any) -> str:
    text = str(value)
    return text.replace("/", "-").replace(" ", "")


def cell_name(values: dict[str, Any]) -> str:
    """``{'model.variant': 'multimix', 'seed': 0}`` -> ``'multimix_seed0'``."""
    parts = []
    for key, value in values.items():
        short = SHORT_NAMES.get(key, key.rsplit(".", 1)[-1] + "-")
        parts.append(f"{short}{_value_text(value)}")
    return "_".join(parts) or "run"


def load_spec(path: str | Path, output_dir: str | Path | None = None,
              extra_overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read a spec and expand its grid; every cell's config is validated here, before anything is
    submitted (errors name the spec file and the cell). ``extra_overrides`` (``key=value``) apply
    to every cell after the spec's own."""
    path = Path(path)
    spec = read_yaml_mapping(path, "sweep spec")
    for key in spec:
        if key not in SPEC_KEYS:
            raise _fail(path, str(key), f"unknown key (valid keys: {', '.join(SPEC_KEYS)})")
    if "config" not in spec:
        raise _fail(path, "config", "missing: the base run config file")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise _fail(path, "grid", "must map dotted config keys to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{key}", f"must be a non-empty list, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise _fail(path, f"grid.{key}", f"repeats a value: {values!r}")
    fixed = spec.get("overrides") or {}
    if not isinstance(fixed, dict):
        raise _fail(path, "overrides", "must map dotted config keys to values")
    slurm_raw = spec.get("slurm") or {}
    known = {f.name for f in fields(SlurmOptions)}
    for key in slurm_raw:
        if key not in known:
            raise _fail(path, f"slurm.{key}", f"unknown key (valid keys: {', '.join(sorted(known))})")
    try:
        slurm = SlurmOptions(**slurm_raw)
    except (TypeError, ValueError) as exc:
        raise _fail(path, "slurm", str(exc)) from None

    evaluate = spec.get("evaluate", "none")
    if evaluate not in EVALUATE_CHOICES:
        raise _fail(path, "evaluate", f"{evaluate!r} is not one of {list(EVALUATE_CHOICES)}")
    name = str(spec.get("name") or path.stem)
    sweep_dir = Path(output_dir or spec.get("output_dir") or Path("runs/sweeps") / name).resolve()
    base_tree = read_yaml_tree(path.parent / spec["config"])
    fixed_text = [f"{key}={json.dumps(value)}" for key, value in fixed.items()]
    cells, seen = [], {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid.keys(), combo))
        name_ = cell_name(values)
        if name_ in seen:
            raise _fail(path, "grid", f"cells {seen[name_]} and {values} get the same folder "
                        f"name {name_!r}")
        seen[name_] = values
        cell_text = [f"{key}={json.dumps(value)}" for key, value in values.items()]
        tree = apply_overrides(base_tree, [*fixed_text, *extra_overrides, *cell_text,
                                           f"output_dir={json.dumps(str(sweep_dir / name_))}"])
        try:
            config = from_dict(tree)
        except ConfigError as exc:
            raise ConfigError(f"{path}: cell {name_}: {exc}") from None
        cells.append(Cell(name_, values, config.to_dict()))
    return SweepSpec(path, name, sweep_dir, cells, slurm, evaluate)


# ---- state of the cells ---------------------------------------------------------------------

def cell_status(cell: Cell, state: dict, evaluate: str = "none") -> str:
    """'completed', 'queued' (its job is pending or running), 'failed' (its job is gone without
    a completed run, or without the evaluation the spec asks for) or 'missing' (never submitted)."""
    summary = cell.run_dir / "summary.json"
    evaluated = evaluate == "none" or (cell.run_dir / "eval" / "metrics.json").is_file()
    if summary.is_file() and evaluated:
        try:
            if json.loads(summary.read_text()).get("status") == "completed":
                return "completed"
        except json.JSONDecodeError:
            pass
    entry = state.get("cells", {}).get(cell.name, {})
    job_id = entry.get("job_id")
    if job_id is None:
        return "missing"
    if entry.get("local"):  # a --local cell's job id is its process id
        return "queued" if _process_alive(int(job_id)) else "failed"
    return "queued" if job_in_queue(job_id) else "failed"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        return {"cells": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); remove it to start the sweep's "
                         "bookkeeping afresh") from None


def write_state(sweep_dir: Path, state: dict) -> None:
    path = Path(sweep_dir) / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def submit_sweep(spec: SweepSpec, local: bool = False) -> tuple[list, dict[str, str]]:
    """Submit every cell that is not completed or queued, as one job array.

    Returns (jobs, status of every cell before submission). Cells that ran before are resubmitted
    with resume, so they continue from their latest checkpoint.
    """
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(spec.output_dir)
    statuses = {cell.name: cell_status(cell, state, spec.evaluate) for cell in spec.cells}
    todo = [cell for cell in spec.cells if statuses[cell.name] in ("missing", "failed")]
    jobs = []
    if todo:
        executor = build_executor(spec.output_dir / "submitit", spec.slurm, local=local)
        with executor.batch():
            for cell in todo:
                jobs.append(executor.submit(TrainJob(cell.config_tree, resume=True,
                                                     evaluate=spec.evaluate)))
        for cell, job in zip(todo, jobs):
            state["cells"][cell.name] = {"job_id": job.job_id, "values": cell.values,
                                         "local": local}
    state.update(spec=str(spec.path.resolve()), name=spec.name)
    write_state(spec.output_dir, state)
    return jobs, statuses
