"""What a sweep costs, for ``python -m mmdist.sweep SPEC --dry-run``: jobs, GPUs, GPU-hours.

S is one run's training step alone on its GPU (``python -m mmdist.bench step``'s
step_s_median); S_K is one run's step while K runs share that GPU (``python -m mmdist.bench
pack``'s step_s_median at runs = K). A run of N steps holds its GPUs N x S seconds; a pack of K
runs holds one GPU for max(N) x S_K seconds. Packing pays when S_K < K x S.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from mmdist.config import ConfigError


def packed_seconds_from_bench(path: str | Path, runs_per_gpu: int) -> tuple[float, dict]:
    """(S_K, the result's settings) from a ``bench pack`` JSON line at ``runs_per_gpu``.
    Raises ValueError naming the file when it is not one or has no entry for that K."""
    path = Path(path)
    try:
        result = json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a `python -m mmdist.bench pack` result ({exc})") from None
    if not isinstance(result, dict) or result.get("benchmark") != "pack":
        raise ValueError(f"{path}: not a `python -m mmdist.bench pack` result (no "
                         "'benchmark': 'pack')")
    by_runs = {entry["runs"]: entry for entry in result.get("by_runs", [])}
    if runs_per_gpu not in by_runs:
        raise ValueError(f"{path}: measured runs {sorted(by_runs)}, not the spec's "
                         f"slurm.runs_per_gpu {runs_per_gpu}; run `python -m mmdist.bench pack "
                         f"--runs 1 {runs_per_gpu}` on the runs' GPU")
    settings = {k: result.get(k) for k in ("device", "gpu", "size", "precision", "variant")}
    return float(by_runs[runs_per_gpu]["step_s_median"]), settings


def estimate_lines(spec, statuses: dict[str, str], pack_result: Optional[str] = None) -> list[str]:
    """The jobs and GPU-hours of the spec's runs (all, and those not completed) at its K =
    slurm.runs_per_gpu, from S (K = 1) or S_K (the spec's estimate, or ``pack_result``, a
    ``bench pack`` JSON file); or how to get them. Raises ValueError for a bad pack_result."""
    from mmdist.data.records import DatasetError

    k = spec.slurm.runs_per_gpu
    gpus = spec.slurm.nodes * spec.slurm.gpus_per_node
    unit = "GPU-hours" if gpus else "job-hours (the spec asks for no GPUs)"
    jobs = len(spec.packs(spec.runs))
    up_to = "up to " if len(spec.runs) % k else ""
    lines = [f"jobs:        {jobs} array tasks of {up_to}{k} run{'s' if k > 1 else ''} each, "
             f"{max(gpus, 1) if gpus else 0} GPU each, at most {spec.slurm.array_parallelism} "
             "at once"]
    packed, source = spec.seconds_per_step_packed, "the spec's estimate.seconds_per_step_packed"
    if pack_result is not None:
        packed, settings = packed_seconds_from_bench(pack_result, k)
        source = f"{pack_result} ({', '.join(f'{a}={b}' for a, b in settings.items() if b)})"
    if k == 1 and pack_result is None:
        packed, source = spec.seconds_per_step, "the spec's estimate.seconds_per_step"
    if packed is None:
        lines.append("estimate:    none; add `estimate: {seconds_per_step: S}` to the spec, S the "
                     "step_s_median of `python -m mmdist.bench step` on the runs' GPU"
                     if k == 1 else
                     f"estimate:    none for runs_per_gpu {k}; add `estimate: "
                     "{seconds_per_step_packed: S_K}` to the spec or pass --pack-result FILE, "
                     f"from `python -m mmdist.bench pack --runs 1 {k}` on the runs' GPU")
        if k == 1 or spec.seconds_per_step is None:
            return lines
    ranks = spec.slurm.nodes * spec.slurm.ranks_per_node
    try:
        planned = {r.name: r.planned_steps(ranks) for r in spec.runs}
    except (DatasetError, ConfigError, ValueError, OSError) as exc:
        return lines + [f"estimate:    unknown: the runs count epochs and their data cannot be "
                        f"read here ({exc}); give the data, trainer.steps_per_epoch or "
                        "trainer.max_steps"]

    def hours(runs, per_gpu: int, seconds: float) -> float:
        """Each pack holds its GPUs for its longest run's steps."""
        return sum(max(planned[r.name] for r in group) for group in spec.packs(runs, per_gpu)) \
            * seconds * max(gpus, 1) / 3600

    left = [r for r in spec.runs if statuses[r.name] != "completed"]
    if packed is not None:
        per = (f"{packed:g} s/step x steps per run x {max(gpus, 1)} GPU per run" if k == 1 else
               f"S_K = {packed:g} s/step per run with {k} sharing a GPU, from {source}; "
               f"longest run's steps x S_K per job")
        lines += [f"estimate:    {hours(spec.runs, k, packed):.1f} {unit} for {len(spec.runs)} "
                  f"runs ({per}); not completed: {hours(left, k, packed):.1f} for {len(left)} runs"]
    if k > 1 and spec.seconds_per_step is not None:
        alone = hours(spec.runs, 1, spec.seconds_per_step)
        line = (f"             one run per GPU instead (S = {spec.seconds_per_step:g} s/step): "
                f"{alone:.1f} {unit}")
        if packed is not None:
            line += f"; packing {k} saves {1 - hours(spec.runs, k, packed) / alone:.0%}"
        lines.append(line)
    lines.append("             upper bound: a resumed run trains only the steps after its "
                 "checkpoint")
    steps = Counter(planned.values())
    if len(steps) > 1:
        lines.append("             steps differ: " + ", ".join(
            f"{s} ({n} runs)" for s, n in sorted(steps.items())))
    return lines
