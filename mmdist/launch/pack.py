"""Packed runs: K runs of a sweep trained at once on one GPU, each in a process of its own.

``PackJob`` is one task of the sweep's job array (one GPU, its CPUs). It starts one child process
per run (``python -m mmdist.launch.pack PLAN.json``), waits for every child, and reports each
run's own end. Why one array task that starts K processes, and not K tasks of one SLURM job or an
MPS server of our own:

- K tasks of one job are the ranks of one submitit callable: each would discover a K-rank world
  from SLURM's variables, submitit keeps rank 0's result only, and a preemption requeues the job
  as one. Here each child is told it is a world of one, and the parent reads every child's exit.
- A failing child ends only itself: the parent records 'failed' for that run and keeps waiting
  for the others (no ``--kill-on-bad-exit`` step to tear down).
- On USR2/TERM (SLURM's preemption or time-limit warning) the parent passes the signal on; every
  child checkpoints at its next step boundary and exits 3; the parent then hands over to
  submitit, which requeues the task with this same PackJob. A requeued task skips its finished
  runs and every other run resumes from its own checkpoint (children always start with
  ``trainer.resume=true``).
- CUDA MPS is not started here: it is a per-node daemon that the cluster runs (or not); where
  it runs, these processes use it on their own, which lets their kernels overlap instead of
  time-slicing.

Per run: CPU ids ``cpus[i*C:(i+1)*C]`` of the task's affinity set, C = max(1, CPUs // K) (run i
is pinned to them, so neighbours do not steal each other's cores), and torch threads
T = max(1, C - W), W the run's batch processes and threads (``data.workers``, plus
``data.augment.threads`` with the DALI backend): each of them keeps a core busy too.
``trainer.threads`` > 0 is kept as given. GPU: the torch allocator of each run is capped at
``SlurmOptions.memory_fraction_per_run`` (torch.cuda.set_per_process_memory_fraction), and DALI
allocates through cudaMallocAsync (DALI_USE_CUDA_MALLOC_ASYNC=1: blocks DALI frees go to CUDA's
stream-ordered pool, which the driver can release, instead of staying in DALI's own pool, which
only grows until ReleaseUnusedMemory; DALI 2.4 has no size cap) so that K pipelines fit beside K
models. Not yet measured on a GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from mmdist.launch.submit import PREEMPT_SIGNAL

EXIT_STATUS = {0: "completed", 3: "preempted"}
"""A child's exit status -> its run's end; anything else is 'failed'."""


def run_completed(run_dir: Path, evaluate: str = "none") -> bool:
    """True when the run's summary.json says 'completed' and, when ``evaluate`` asks for it, its
    eval/metrics.json exists: such a run is never trained again."""
    summary = Path(run_dir) / "summary.json"
    if evaluate != "none" and not (Path(run_dir) / "eval" / "metrics.json").is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("status") == "completed"
    except (OSError, json.JSONDecodeError):
        return False


@dataclass(frozen=True)
class RunShare:
    """What one of K packed runs gets of its task's CPUs."""

    cpus: tuple[int, ...]
    """CPU ids the run's process (and its batch workers) is pinned to."""
    threads: int
    """torch intra-op threads of the run."""


def batch_processes(config_tree: dict) -> int:
    """The run's batch workers and DALI threads, each of which keeps a core busy."""
    data = config_tree.get("data", {})
    augment = data.get("augment", {})
    dali = augment.get("threads", 0) if augment.get("backend") == "dali" else 0
    return int(data.get("workers", 0)) + int(dali)


def cpu_share(cpus: list[int], runs_per_gpu: int, index: int, config_tree: dict) -> RunShare:
    """Run ``index`` of ``runs_per_gpu``: C = max(1, len(cpus) // K) CPU ids, and
    T = trainer.threads when > 0, else max(1, C - batch_processes). K is the spec's
    runs_per_gpu, not the number of runs left, so a requeued run keeps its threads."""
    per_run = max(1, len(cpus) // runs_per_gpu)
    ids = tuple(cpus[(index * per_run + j) % len(cpus)] for j in range(per_run))
    configured = int(config_tree.get("trainer", {}).get("threads", 0) or 0)
    threads = configured if configured > 0 else max(1, per_run - batch_processes(config_tree))
    return RunShare(ids, threads)


def _child_env(share: RunShare) -> dict[str, str]:
    from mmdist.engine.distributed import free_port

    env = dict(os.environ)
    # A world of one: rank discovery reads RANK/WORLD_SIZE before SLURM's variables, which
    # describe the task (and would give every child the same rendezvous port).
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()), OMP_NUM_THREADS=str(share.threads),
               PYTHONUNBUFFERED="1")
    env.pop("SLURM_CPUS_PER_TASK", None)  # the task's CPUs, not this run's: threads come from OMP
    # DALI documents cudaMallocAsync as incompatible with DALI_USE_DEVICE_MEM_POOL=0 and with an
    # explicit DALI_USE_VMM=1: a user who set either keeps DALI's pool as configured.
    if env.get("DALI_USE_DEVICE_MEM_POOL") != "0" and env.get("DALI_USE_VMM") != "1":
        env.setdefault("DALI_USE_CUDA_MALLOC_ASYNC", "1")
    # The children import the same mmdist as this process, wherever the job was started.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


class PackJob(Checkpointable):
    """K runs on one GPU as one submitit callable: ``PackJob(runs, ...)()`` -> summary dict.

    runs: [(run name, Config.to_dict() tree with an absolute output_dir)], at most runs_per_gpu.
    Returns {'status': 'completed' | 'failed' | 'preempted', 'runs': {name: end}}: 'completed'
    only when every run completed; a run that finished before this start reads 'completed'.
    """

    def __init__(self, runs: list[tuple[str, dict]], runs_per_gpu: int, memory_fraction: float,
                 log_dir: str | Path, evaluate: str = "none"):
        self.runs = runs
        self.runs_per_gpu = runs_per_gpu
        self.memory_fraction = memory_fraction
        self.log_dir = str(log_dir)
        self.evaluate = evaluate

    def _start(self, index: int, name: str, tree: dict, cpus: list[int]) -> subprocess.Popen:
        share = cpu_share(cpus, self.runs_per_gpu, index, tree)
        log_dir = Path(self.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        plan = log_dir / f"{name}.json"
        plan.write_text(json.dumps({"config": {**tree, "trainer": {**tree["trainer"],
                                                                    "resume": True}},
                                    "cpus": list(share.cpus), "evaluate": self.evaluate,
                                    "memory_fraction": self.memory_fraction}))
        on_cpu = tree.get("engine", {}).get("device") == "cpu"
        gpu = "no GPU (engine.device cpu)" if on_cpu else \
            f"at most {self.memory_fraction:.3f} of the GPU's memory"
        with open(log_dir / f"{name}.log", "a") as log:
            log.write(f"pack: run {name} on CPUs {list(share.cpus)}, {share.threads} torch "
                      f"threads, {gpu}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
            log.flush()
            return subprocess.Popen([sys.executable, "-m", "mmdist.launch.pack", str(plan)],
                                    stdout=log, stderr=subprocess.STDOUT, env=_child_env(share))

    def __call__(self) -> dict:
        requeue_handler = signal.getsignal(PREEMPT_SIGNAL)
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        cpus = sorted(os.sched_getaffinity(0))
        ends: dict[str, str] = {}
        children: dict[str, subprocess.Popen] = {}

        def pass_on(signum, _frame) -> None:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signum)

        previous = {sig: signal.signal(sig, pass_on) for sig in (PREEMPT_SIGNAL, signal.SIGTERM)}
        try:
            for index, (name, tree) in enumerate(self.runs):
                if run_completed(Path(tree["output_dir"]), self.evaluate):
                    ends[name] = "completed"
                    continue
                try:
                    children[name] = self._start(index, name, tree, cpus)
                except OSError as exc:  # this run cannot start; its neighbours still train
                    print(f"pack: run {name} did not start: {exc}", file=sys.stderr)
                    ends[name] = "failed"
            for name, child in children.items():
                code = child.wait()
                ends[name] = EXIT_STATUS.get(code, "failed")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        status = ("preempted" if "preempted" in ends.values() else
                  "completed" if set(ends.values()) == {"completed"} else "failed")
        summary = {"status": status, "runs": {name: ends[name] for name, _ in self.runs}}
        if status == "preempted" and on_slurm and callable(requeue_handler):
            # Every child is gone, each preempted one with its checkpoint: checkpoint() + requeue.
            requeue_handler(PREEMPT_SIGNAL, None)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit after the children stopped: the same pack again (the finished runs
        are skipped at its start, the others resume)."""
        return DelayedSubmission(PackJob(self.runs, self.runs_per_gpu, self.memory_fraction,
                                         self.log_dir, self.evaluate))


def cap_gpu_memory(config, fraction: float) -> None:
    """Cap this process's torch allocator at ``fraction`` of the GPU (a run on the CPU: nothing)."""
    import torch

    if not config.engine.on_cpu and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, 0)


def child_main(plan_path: str) -> int:
    """One packed run: pin the CPUs, cap the GPU memory, train (and evaluate); exit 0 when the
    run completed, 3 when it stopped on a signal with a checkpoint (a traceback otherwise)."""
    plan = json.loads(Path(plan_path).read_text())
    os.sched_setaffinity(0, plan["cpus"])  # before torch starts its thread pool
    from mmdist.config import from_dict
    from mmdist.launch.submit import train_and_evaluate

    config = from_dict(plan["config"])
    cap_gpu_memory(config, plan["memory_fraction"])
    summary, _ = train_and_evaluate(config, plan["evaluate"])
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["status"] == "completed" else 3


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
