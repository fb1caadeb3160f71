"""Submitting training runs through submitit: the job callable, the executor, following a job.

``TrainJob`` is what runs on the cluster, once per task (rank). It is picklable (it holds the
resolved config tree, a plain dict) and checkpointable: on USR2 (submitit's preemption/time-limit
signal) the trainer finishes its step, rank 0 writes a checkpoint, and rank 0 then hands over to
submitit's own handler, which calls ``TrainJob.checkpoint()``, pickles what it returns and runs
``scontrol requeue``. The requeued job resumes from the run directory's latest checkpoint: the
resume point is never carried in the pickle, so a requeue of the original submission (node
failure, scheduler preemption without our signal: SLURM_RESTART_COUNT > 0) resumes as well.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission
from submitit.local.local import LocalJob

PREEMPT_SIGNAL = signal.SIGUSR2
"""submitit's default preemption signal (USR1 collides with NCCL)."""
EVALUATE_CHOICES = ("none", "metrics", "plots")
"""After training: nothing, RUN_DIR/eval/metrics.json (mmdist.evaluation.evaluate), or the
metrics and the figures."""


def restart_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


class TrainJob(Checkpointable):
    """One training run as a submitit callable: ``TrainJob(config_tree)()`` -> summary dict.

    config_tree: ``Config.to_dict()`` of the resolved run config (output_dir absolute).
    evaluate: one of EVALUATE_CHOICES; a completed run is then evaluated on its test sets.
    Returns the trainer's summary (status 'completed'); a preempted run does not return on
    rank 0 under submitit (it is requeued) and returns status 'preempted' elsewhere.
    """

    def __init__(self, config_tree: dict, resume: bool = False, evaluate: str = "none"):
        if evaluate not in EVALUATE_CHOICES:
            raise ValueError(f"evaluate: {evaluate!r} is not one of {list(EVALUATE_CHOICES)}")
        self.config_tree = config_tree
        self.resume = resume
        self.evaluate = evaluate

    @property
    def output_dir(self) -> Path:
        return Path(self.config_tree["output_dir"])

    def config(self):
        from mmdist.config import from_dict

        tree = copy.deepcopy(self.config_tree)
        if self.resume or restart_count() > 0:
            tree.setdefault("trainer", {})["resume"] = True
        return from_dict(tree)

    def __call__(self) -> dict:
        config = self.config()
        # submitit's handler (present only inside a submitit job); the trainer's replaces it for
        # the run so that a signal stops the loop at a step boundary instead of mid-step.
        requeue_handler = signal.getsignal(PREEMPT_SIGNAL)
        # Only a SLURM job can be requeued; a local one just reports 'preempted'.
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            _export_local_rendezvous()
        summary, rank = train_and_evaluate(config, self.evaluate)
        if summary["status"] == "preempted" and on_slurm and callable(requeue_handler):
            signal.signal(PREEMPT_SIGNAL, requeue_handler)
            if rank == 0:
                # Checkpoint is on disk (the others waited for it): checkpoint() + requeue + exit.
                requeue_handler(PREEMPT_SIGNAL, None)
            else:
                # Returning would leave a result file for a run that is not over; the requeue
                # that rank 0 issues ends this process with SIGTERM, which must kill it now (the
                # trainer's handler would only set a flag, and SLURM would wait KillWait for it).
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(600)
                raise RuntimeError(f"rank {rank}: preempted, but the job was not requeued in 600 s")
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit on rank 0 after the trainer checkpointed: resubmit with resume."""
        return DelayedSubmission(TrainJob(self.config_tree, resume=True, evaluate=self.evaluate))


def train_and_evaluate(config, evaluate: str = "none") -> tuple[dict, int]:
    """Train ``config`` (a Config) with the trainer's stop signals installed, evaluate a completed
    run on its test sets when ``evaluate`` asks, close the strategy; returns (summary, rank)."""
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(config)
    trainer.install_signal_handlers()
    summary = trainer.fit()
    if summary["status"] == "completed" and evaluate != "none":
        # Every rank, while the process group is up: evaluation shards the test sets.
        from mmdist.evaluation.evaluate import evaluate_run

        evaluate_run(config.output_dir, plots_on=evaluate == "plots")
    rank = trainer.strategy.rank
    trainer.strategy.close()
    return summary, rank


def _export_local_rendezvous() -> None:
    """torch env:// variables for a job that submitit runs on this machine (``--local``).

    Under SLURM nothing is exported: rank discovery (mmdist.engine.distributed) reads SLURM's own
    variables. submitit's LocalExecutor sets only its own, so they are translated here."""
    from submitit.helpers import TorchDistributedEnvironment

    if TorchDistributedEnvironment().world_size > 1:
        env = TorchDistributedEnvironment()
        env.master_addr = "127.0.0.1"
        env.export(set_cuda_visible_devices=False, overwrite=True)


@dataclass
class SlurmOptions:
    """Resources of one job (or of each task of a job array)."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: Optional[int] = None
    """Ranks per node; None means one per GPU (or 1 without GPUs)."""
    cpus_per_task: Optional[int] = None
    """CPUs per rank; None divides a node's CPUs (the partition's smallest node, from sinfo)
    among its ranks. Each rank runs that many torch threads (SLURM_CPUS_PER_TASK)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    time_min: int = 60
    mem_gb: Optional[float] = None
    array_parallelism: int = 16
    """Sweeps: at most this many array tasks run at once."""
    max_requeues: int = 20
    """Time-limit requeues before submitit gives up (preemptions do not count)."""
    job_name: str = "mmdist"
    runs_per_gpu: int = 1
    """Sweeps: K runs trained at once in each array task, one process each, on the task's one
    GPU (or its CPUs); see mmdist.launch.pack."""
    gpu_memory_fraction: Optional[float] = None
    """Packed runs: the share of the GPU's memory each run's torch allocator may hold (None:
    0.9 / runs_per_gpu, the rest left to the K CUDA contexts and DALI's buffers)."""
    extra: dict = field(default_factory=dict)
    """More sbatch options (name without dashes -> value), e.g. {'qos': 'high'}."""

    def __post_init__(self) -> None:
        for name in ("nodes", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ValueError(f"cpus_per_task: must be >= 1, got {self.cpus_per_task}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node: must be >= 0, got {self.gpus_per_node}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ValueError(f"tasks_per_node: must be >= 1, got {self.tasks_per_node}")
        if self.runs_per_gpu < 1:
            raise ValueError(f"runs_per_gpu: must be >= 1, got {self.runs_per_gpu}")
        if self.runs_per_gpu > 1 and (self.nodes > 1 or self.gpus_per_node > 1
                                      or self.ranks_per_node > 1):
            raise ValueError(f"runs_per_gpu: {self.runs_per_gpu} packs single-GPU runs; it needs "
                             f"nodes: 1, gpus_per_node <= 1 and one task per node (got nodes: "
                             f"{self.nodes}, gpus_per_node: {self.gpus_per_node}, tasks_per_node: "
                             f"{self.ranks_per_node})")
        fraction = self.gpu_memory_fraction
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"gpu_memory_fraction: must be in (0, 1], got {fraction}")

    @property
    def memory_fraction_per_run(self) -> float:
        """The GPU memory share of one packed run (``gpu_memory_fraction`` or 0.9 / K)."""
        return self.gpu_memory_fraction or 0.9 / self.runs_per_gpu

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)


def cpus_per_node(partition: Optional[str] = None) -> Optional[int]:
    """The fewest CPUs of any node in ``partition`` (all partitions when None), from sinfo;
    None when SLURM cannot say."""
    command = ["sinfo", "-h", "-o", "%c"] + (["-p", partition] if partition else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = [int(v.rstrip("+")) for v in done.stdout.split() if v.rstrip("+").isdigit()]
    return min(counts) if done.returncode == 0 and counts else None


def resolve_cpus_per_task(options: SlurmOptions, local: bool = False) -> tuple[int, str]:
    """(CPUs per rank, why): the option when given, else a node's CPUs over its ranks."""
    if options.cpus_per_task:
        return options.cpus_per_task, "as asked"
    ranks = options.ranks_per_node
    if local:
        from mmdist.engine.devices import usable_cpus

        node, where = usable_cpus(), "this machine"
    else:
        node, where = cpus_per_node(options.partition), "per node (sinfo)"
    if node is None:
        return 1, "SLURM did not report the nodes' CPUs; set --cpus-per-task"
    return max(1, node // ranks), f"{node} CPUs {where} / {ranks} rank(s) per node"


def build_executor(folder: str | Path, options: SlurmOptions, local: bool = False):
    """A submitit executor writing its pickles and logs under ``folder``.

    local=True runs the job on this machine (submitit's LocalExecutor: one process per rank,
    ranks = nodes * ranks_per_node), without SLURM.
    """
    folder = Path(folder)
    if local:
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=options.max_requeues)
        # gpus_per_node: submitit's local executor hides every GPU (CUDA_VISIBLE_DEVICES="")
        # unless it is told how many the job may use.
        executor.update_parameters(tasks_per_node=options.nodes * options.ranks_per_node,
                                   timeout_min=options.time_min,
                                   gpus_per_node=options.gpus_per_node)
        return executor
    cpus_per_task, _ = resolve_cpus_per_task(options)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                     slurm_max_num_timeout=options.max_requeues)
    params: dict[str, Any] = dict(
        name=options.job_name, nodes=options.nodes, tasks_per_node=options.ranks_per_node,
        cpus_per_task=cpus_per_task, timeout_min=options.time_min,
        slurm_signal_delay_s=90, slurm_array_parallelism=options.array_parallelism,
        slurm_additional_parameters={"requeue": True, **options.extra})
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.account:
        params["slurm_account"] = options.account
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    executor.update_parameters(**params)
    return executor


def slurm_unreachable() -> Optional[str]:
    """Why no job can be submitted to SLURM from here (None when its controller answers):
    sbatch missing, or ``scontrol ping`` failing (no slurm.conf / configless source, controller
    down). One line, for the command line to print beside its pointer to ``--local``."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on the PATH"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return f"SLURM_CONF={conf} does not exist"  # scontrol would retry it for a minute
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"scontrol ping: {exc}"
    except subprocess.TimeoutExpired:
        return "scontrol ping did not answer in 30 s"
    if done.returncode == 0 and "DOWN" not in done.stdout:
        return None
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    # The last line is the one that says why (sbatch and scontrol print the lookups first).
    return f"scontrol ping: {lines[-1] if lines else f'exit status {done.returncode}'}"


def job_in_queue(job_id: str) -> bool:
    """True while SLURM lists the job (pending, running, requeued, completing)."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep waiting (the caller's timeout still applies)
    if done.returncode != 0:
        # squeue rejects ids that have left the controller's memory ("Invalid job id").
        return "Invalid job id" not in done.stderr
    return bool(done.stdout.strip())


@dataclass
class Outcome:
    """How a followed job ended."""

    job_id: str
    status: str
    """'completed', 'preempted' (stopped, not requeued), 'failed' or 'timeout' (we stopped waiting)."""
    summary: Optional[dict] = None
    error: str = ""

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "preempted": 3}.get(self.status, 1)


def follow(job, timeout_s: Optional[float] = None, poll_s: float = 2.0,
           gone_grace_s: float = 30.0) -> Outcome:
    """Wait for ``job`` (rank 0's result) and say how it ended.

    A job that leaves the queue without a result (killed, node lost, cancelled) is 'failed' after
    ``gone_grace_s``: without SLURM accounting submitit alone would wait on it forever.
    """
    task = job.task(0) if job.num_tasks > 1 else job
    local = isinstance(job, LocalJob)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    gone_since = None
    while True:
        if task.paths.result_pickle.exists() or (local and job.done()):
            try:
                summary = task.result()
            except Exception as exc:  # the job's own exception, with its traceback
                return Outcome(job.job_id, "failed", error=str(exc))
            return Outcome(job.job_id, summary.get("status", "failed"), summary)
        if not local:
            if job_in_queue(job.job_id):
                gone_since = None
            else:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > gone_grace_s:
                    return Outcome(job.job_id, "failed",
                                   error=f"job {job.job_id} left the queue without a result; "
                                         f"see {task.paths.stdout} and {task.paths.stderr}")
        if deadline is not None and time.monotonic() > deadline:
            return Outcome(job.job_id, "timeout", error=f"still running after {timeout_s:.0f} s")
        time.sleep(poll_s)
