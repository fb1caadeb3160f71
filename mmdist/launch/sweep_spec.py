"""A sweep's spec: the YAML file, its grid expanded into cells and the runs that stand for them.

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
      runs_per_gpu: 1                 # K > 1: each array task trains K runs on its one GPU
    evaluate: metrics                 # after training: none | metrics | plots
    estimate:                         # optional, for the GPU-hours of --dry-run
      seconds_per_step: 0.5           # S: one training step of one run alone (mmdist.bench step)
      seconds_per_step_packed: 0.7    # S_K: one run's step while slurm.runs_per_gpu = K share
                                      # its GPU (mmdist.bench pack); only with K > 1

A cell whose variant does not read a grid key (``TASK_KEYS``: U-Net has no classifier, so no
classification budget; the encoder-only models have no decoder, so no mask budget) would repeat
another cell exactly; such cells share one run, trained at the key's first grid value and named
after that cell, and the table shows it under every value it stands for.

Every cell's config is validated when the spec is loaded, before anything is submitted. Which runs
finished and which to submit again: mmdist.launch.sweep_state; submitting them:
mmdist.launch.sweep_submit.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from mmdist.config import (ConfigError, apply_overrides, from_dict, parse_override,
                           read_yaml_mapping, read_yaml_tree)
from mmdist.config.variants import VARIANTS
from mmdist.launch.submit import EVALUATE_CHOICES, SlurmOptions

SPEC_KEYS = ("config", "output_dir", "grid", "overrides", "slurm", "name", "evaluate", "estimate")
SHORT_NAMES = {"model.variant": "", "data.budget.classification_labeled": "c",
               "data.budget.segmentation_labeled": "s", "seed": "seed"}
"""How a grid key shows in a cell's folder name (anything else: its last component + '-')."""
TASK_KEYS = {"classification": ("data.budget.classification_labeled",),
             "segmentation": ("data.budget.segmentation_labeled",)}
"""Config keys that only one task reads: the labeled budget picks the labeled images of that
task's split, and training and evaluation split only a variant's own tasks (VariantSpec.tasks,
through build_task_data), so a variant without the task never reads its budget. (A task's data
source is not listed: it can count for other variants too, e.g. as the epoch length.)"""


@dataclass
class Cell:
    """One grid point: its name, its grid values and the name of the run that stands for it."""

    name: str
    values: dict[str, Any]
    run: str


@dataclass
class Run:
    """One training run (one folder, one array task): the grid values it trains with (keys its
    variant ignores at their first grid value), its resolved config and the cells it stands for."""

    name: str
    values: dict[str, Any]
    config_tree: dict
    cells: list[str]

    @property
    def run_dir(self) -> Path:
        return Path(self.config_tree["output_dir"])

    def planned_steps(self, ranks: int) -> int:
        """The run's length in steps at ``ranks`` ranks: trainer.max_steps, or trainer.max_epochs
        x the epoch its data sources define (mmdist.engine.schedule), which reads the sources'
        sizes (a prepared cache is memory-mapped, the built-in data counted without pixels).
        Raises DatasetError/ConfigError when a recipe's data cannot be read here."""
        trainer = self.config_tree["trainer"]
        if trainer.get("max_steps") is not None:
            return int(trainer["max_steps"])
        from mmdist.data.task_data import epoch_pool
        from mmdist.engine.schedule import plan_run

        config = from_dict(self.config_tree)
        # Runs of one sweep share their data: count each (data, seed) once.
        key = json.dumps([self.config_tree["data"], self.config_tree["seed"]], sort_keys=True,
                         default=str)
        if key not in _EPOCH_POOLS:
            _EPOCH_POOLS[key] = epoch_pool(config)
        pool = _EPOCH_POOLS[key]
        return plan_run(config, ranks, pool.images, pool.description).max_steps


_EPOCH_POOLS: dict[str, object] = {}


@dataclass
class SweepSpec:
    path: Path
    name: str
    output_dir: Path
    cells: list[Cell]
    runs: list[Run]
    slurm: SlurmOptions
    evaluate: str = "none"
    seconds_per_step: Optional[float] = None
    """The spec's estimate.seconds_per_step, S (None: not given)."""
    seconds_per_step_packed: Optional[float] = None
    """The spec's estimate.seconds_per_step_packed, S_K at K = slurm.runs_per_gpu (None: not
    given)."""

    def packs(self, runs: list[Run], per_gpu: Optional[int] = None) -> list[list[Run]]:
        """``runs`` in groups of ``per_gpu`` (default slurm.runs_per_gpu), in their order: one
        array task (one GPU's share) each, the last one possibly smaller. Submission and the
        cost estimate both group with this."""
        k = per_gpu or self.slurm.runs_per_gpu
        return [runs[i:i + k] for i in range(0, len(runs), k)]

    def cell_records(self) -> dict[str, dict]:
        """{cell name: {'values', 'run'}}, as sweep.json keeps them for --collect."""
        return {c.name: {"values": c.values, "run": c.run} for c in self.cells}


def _fail(path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {message}")


def cell_name(values: dict[str, Any]) -> str:
    """``{'model.variant': 'multimix', 'seed': 0}`` -> ``'multimix_seed0'``."""
    parts = []
    for key, value in values.items():
        short = SHORT_NAMES.get(key, key.rsplit(".", 1)[-1] + "-")
        parts.append(short + str(value).replace("/", "-").replace(" ", ""))
    return "_".join(parts) or "run"


def ignored_keys(variant: str, keys) -> list[str]:
    """The ``keys`` (dotted) that ``variant`` never reads: those of the tasks it does not train."""
    tasks = VARIANTS[variant].tasks
    unread = {key for task, owned in TASK_KEYS.items() if task not in tasks for key in owned}
    return [key for key in keys if key in unread]


def _refuse_lost_overrides(path: Path, spec: dict, extra_overrides) -> None:
    """Refuse what each cell would overwrite: output_dir (SWEEP_DIR/<run>) and the grid's keys."""
    for text in extra_overrides:
        key = ".".join(parse_override(text)[0])
        if key == "output_dir":
            raise ConfigError(f"override {text!r}: a sweep sets each run's output_dir; choose the "
                              "sweep folder with --output-dir")
        for grid_key in spec.get("grid") or {}:
            if key == grid_key or key.startswith(grid_key + ".") or grid_key.startswith(key + "."):
                raise ConfigError(f"override {text!r}: {grid_key} is a grid key of {path} (each "
                                  "cell sets it); change the spec's grid instead")
    for section in ("grid", "overrides"):
        if "output_dir" in (spec.get(section) or {}):
            raise _fail(path, f"{section}.output_dir", "a sweep sets each run's output_dir; "
                        "choose the sweep folder with the spec's output_dir key or --output-dir")


ESTIMATE_KEYS = ("seconds_per_step", "seconds_per_step_packed")


def _read_options(path: Path, spec: dict) -> tuple[SlurmOptions, str, dict[str, float]]:
    """The spec's slurm, evaluate and estimate sections, checked."""
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
    estimate = spec.get("estimate") or {}
    if not isinstance(estimate, dict) or set(estimate) - set(ESTIMATE_KEYS):
        raise _fail(path, "estimate", f"must be {{seconds_per_step: S, seconds_per_step_packed: "
                    f"S_K}} (either may be left out), got {estimate!r}")
    for key, seconds in estimate.items():
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise _fail(path, f"estimate.{key}", f"must be a number > 0, got {seconds!r}")
    if "seconds_per_step_packed" in estimate and slurm.runs_per_gpu == 1:
        raise _fail(path, "estimate.seconds_per_step_packed", "prices slurm.runs_per_gpu > 1, "
                    "and the spec packs none (runs_per_gpu: 1): use seconds_per_step")
    return slurm, evaluate, {k: float(v) for k, v in estimate.items()}


def load_spec(path: str | Path, output_dir: str | Path | None = None,
              extra_overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read a spec, expand its grid and collapse cells that repeat a run; every cell's config is
    validated here, before anything is submitted (errors name the spec file and the cell).
    ``extra_overrides`` (``key=value``) apply to every cell after the spec's own."""
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
    _refuse_lost_overrides(path, spec, extra_overrides)
    slurm, evaluate, estimate = _read_options(path, spec)

    name = str(spec.get("name") or path.stem)
    sweep_dir = Path(output_dir or spec.get("output_dir") or Path("runs/sweeps") / name).resolve()
    base_tree = read_yaml_tree(path.parent / spec["config"])
    fixed_text = [f"{key}={json.dumps(value)}" for key, value in fixed.items()]
    cells, trees, seen = [], {}, {}
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
        trees[name_] = config.to_dict()
        # The run that stands for this cell: the same values with every key the variant ignores
        # at its first grid value (a cell of the grid too), so every submission finds one folder.
        ignored = ignored_keys(config.model.variant, values)
        canonical = {k: grid[k][0] if k in ignored else v for k, v in values.items()}
        cells.append(Cell(name_, values, cell_name(canonical)))
    runs: dict[str, Run] = {}
    for cell in cells:
        if cell.run not in runs:
            runs[cell.run] = Run(cell.run, seen[cell.run], trees[cell.run], [])
        runs[cell.run].cells.append(cell.name)
    return SweepSpec(path, name, sweep_dir, cells, list(runs.values()), slurm, evaluate,
                     estimate.get("seconds_per_step"), estimate.get("seconds_per_step_packed"))
