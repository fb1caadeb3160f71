"""The checks, in the order they run (the most telling first), and what each needs.

Each check is a function ``f(ctx: Context, emit)`` in a module of this package, run in a child
process of its own (mmdist.gpucheck.runner) with a timeout; it calls ``emit(row)`` as each of
its cases ends. The timeouts of the checks that run on one GPU add up to at most
ONE_GPU_BUDGET_S, so the whole check ends within six minutes on one GPU even when every check
hangs; the runner also stops starting checks once that budget is spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

ONE_GPU_BUDGET_S = 360.0
"""Six minutes for every check a one-GPU machine runs (a short GPU lease holds a start and a
rerun). The two-GPU checks run after it, with their own timeouts, where two GPUs exist."""


CPU_SLOWDOWN = 10
"""The small CPU forms get this many times the GPU timeouts (a dry run of the machinery on a
shared CPU, not a measurement)."""


@dataclass(frozen=True)
class Check:
    name: str
    target: str
    """``module:function`` run in the child process."""
    timeout_s: float
    cases: tuple[str, ...]
    """The rows it reports, so a check that does not run still shows each of them."""
    gpus: int = 1
    """GPUs it needs (0: it also runs as it is on the CPU)."""
    needs: tuple[str, ...] = ()
    """Third-party modules it needs; missing, its rows are "not run" (never an mmdist module:
    an mmdist import error is a FAILED row)."""
    cpu_form: bool = True
    """It has a small form for ``--device cpu`` (False: it compares the GPU against the CPU,
    or needs NCCL or a GPU pipeline, and is "not run" there)."""
    cpu_timeout_s: float = 0.0
    """Its timeout in the ``--device cpu`` form (0: CPU_SLOWDOWN times ``timeout_s``)."""
    unless: str = ""
    """``module:function`` asked in the parent before starting the child: a non-empty answer is
    why the check cannot run here (its rows are then "not run" at no cost)."""


@dataclass
class Context:
    """What a check is told, as JSON on the child's command line."""

    device: str
    """'cuda', or 'cpu' for the small dry form."""
    out: str
    """The --out folder."""
    work: str
    """This check's own folder, emptied before it starts (no state from an earlier run)."""
    gpus: int = 0
    timeout_s: float = 60.0

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def work_dir(self) -> Path:
        return Path(self.work)

    def to_json(self) -> dict:
        return asdict(self)


PRECISIONS = ("fp32", "bf16", "fp16")
SALIENCY = ("none", "detached", "differentiable")

CHECKS: tuple[Check, ...] = (
    Check("gradients", "mmdist.gpucheck.gradients:gpu_against_cpu", 30,
          tuple(f"{mode} fp32 strict" for mode in SALIENCY), cpu_form=False),
    Check("steps", "mmdist.gpucheck.steps:training_steps", 40,
          tuple(f"{p} {mode}" for p in PRECISIONS for mode in SALIENCY)),
    Check("trainer", "mmdist.gpucheck.trainer_runs:single_runs", 40,
          ("single bf16 ema+val+best", "single fp16 ema+val+best")),
    Check("ddp", "mmdist.gpucheck.trainer_runs:ddp_runs", 55,
          ("1-rank bf16 ema+val+best", "1-rank fp16 ema+val+best", "1-rank bf16 resume")),
    Check("deepspeed", "mmdist.gpucheck.deepspeed_runs:deepspeed_runs", 70,
          ("ZeRO-0 fp16", "ZeRO-2 bf16", "ZeRO-2 fp16", "ZeRO-2 bf16 resume"),
          needs=("deepspeed",)),
    Check("dali", "mmdist.gpucheck.trainer_runs:dali_run", 25, ("gpu pipeline in training",),
          needs=("nvidia.dali",)),
    Check("evaluate", "mmdist.gpucheck.tools:evaluate_and_predict", 20,
          ("evaluate", "predict")),
    Check("gpu tests", "mmdist.gpucheck.gpu_tests:gpu_tests", 30, ("pytest -m gpu",),
          needs=("pytest",), cpu_form=False),
    Check("bench", "mmdist.gpucheck.steps:step_benchmark", 20, ("256px fp32 vs bf16",)),
    Check("compile", "mmdist.gpucheck.trainer_runs:compiled_run", 30, ("trainer --compile",),
          unless="mmdist.gpucheck.trainer_runs:compile_unsupported"),
    Check("2 gpus", "mmdist.gpucheck.two_gpus:ddp_gradients", 60,
          ("ddp gradients = 1 process",), gpus=2),
    Check("2 gpus", "mmdist.gpucheck.two_gpus:rng_resume", 90, ("per-rank RNG resume",),
          gpus=2),
    Check("2 gpus", "mmdist.gpucheck.two_gpus:nccl_watchdog", 90, ("NCCL watchdog",), gpus=2),
)
"""In the order they run. 'compile' runs only when the trainer has a compile setting (today it
has none: ``bench step --compile`` is the only compiled path)."""
