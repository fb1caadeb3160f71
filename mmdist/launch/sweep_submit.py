"""Submitting a sweep: the runs still to do, as one SLURM job array or as local processes.

Submitting the same spec again skips runs that finished and runs still queued or running
(mmdist.launch.sweep_state), and resubmits the others (failed or never run) with
``trainer.resume=true``, so a run that died after a checkpoint continues from it.
"""

from __future__ import annotations

import time
from typing import Any

from mmdist.launch.pack import PackJob
from mmdist.launch.submit import TrainJob, build_executor
from mmdist.launch.sweep_spec import Run, SweepSpec
from mmdist.launch.sweep_state import read_state, write_state


def submit_sweep(spec: SweepSpec, statuses: dict[str, str], local: bool = False,
                 poll_s: float = 1.0) -> list[tuple[list[str], Any]]:
    """Submit every run whose status (``sweep_statuses``) is 'missing' or 'failed'; returns
    [(run names, job)]. Runs that ran before are resubmitted with resume, so they continue from
    their latest checkpoint. With slurm.runs_per_gpu = K > 1, each job trains K of them at once
    (mmdist.launch.pack.PackJob); only runs still to do are packed, so a resubmission never
    trains a finished run again.

    On SLURM the jobs go out as one job array (at most slurm.array_parallelism at once).
    local=True runs them on this machine, at most slurm.array_parallelism at once, and returns
    when the last has ended.
    """
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(spec.output_dir)
    # The spec's cells, before anything runs: --collect tabulates these, never a folder that an
    # earlier grid left behind.
    state.update(spec=str(spec.path.resolve()), name=spec.name, cells=spec.cell_records())
    write_state(spec.output_dir, state)
    todo = [run for run in spec.runs if statuses[run.name] in ("missing", "failed")]
    if not todo:
        return []
    executor = build_executor(spec.output_dir / "submitit", spec.slurm, local=local)

    def record(group: list[Run], job) -> None:
        for run in group:
            state["runs"][run.name] = {"job_id": job.job_id, "values": run.values, "local": local}

    def job_of(group: list[Run]):
        if spec.slurm.runs_per_gpu == 1:
            return executor.submit(TrainJob(group[0].config_tree, resume=True,
                                            evaluate=spec.evaluate))
        return executor.submit(PackJob([(r.name, r.config_tree) for r in group],
                                       spec.slurm.runs_per_gpu, spec.slurm.memory_fraction_per_run,
                                       spec.output_dir / "submitit" / "packed", spec.evaluate))

    groups = spec.packs(todo)
    if not local:
        with executor.batch():
            jobs = [job_of(group) for group in groups]
        for group, job in zip(groups, jobs):
            record(group, job)
        write_state(spec.output_dir, state)
        return [([r.name for r in group], job) for group, job in zip(groups, jobs)]
    # A local executor starts every job it is given at once: start one when a slot frees.
    submitted, running, queue = [], [], list(groups)
    while queue or running:
        running = [job for job in running if not job.done()]
        while queue and len(running) < spec.slurm.array_parallelism:
            group = queue.pop(0)
            job = job_of(group)
            record(group, job)
            write_state(spec.output_dir, state)  # a rerun meanwhile sees it as queued
            submitted.append(([r.name for r in group], job))
            running.append(job)
        if running:
            time.sleep(poll_s)
    return submitted
