"""What the checks share: the fp32 switches, a random batch in any dtype, weight comparisons,
and ``python -m mmdist.train`` runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def strict_fp32() -> None:
    """fp32 matmuls and convolutions in full fp32 on CUDA (no TF32), with torch's current
    precision API where it has one (torch >= 2.9), else the allow_tf32 flags."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(conv, "conv") and hasattr(conv.conv, "fp32_precision"):
        matmul.fp32_precision = "ieee"
        conv.conv.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False
        conv.allow_tf32 = False


def random_batch(per_stream: int, size: int, dtype=torch.float32, seed: int = 0):
    """A five-stream MultiMix batch: images (N, 1, size, size) in [-1, 1] of ``dtype``, masks
    of 0/1 in ``dtype``, int64 class targets."""
    from mmdist.bench.step import random_batch as bench_batch
    from mmdist.data.step_batch import StepBatch
    from mmdist.model import VARIANTS

    batch = bench_batch(VARIANTS["multimix"].streams, per_stream, size,
                        torch.Generator().manual_seed(seed))
    return StepBatch(**{k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
                        for k, v in vars(batch).items()})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()
            if v.is_floating_point()}


def largest_change(before: dict, after: dict) -> float:
    return max(float((after[k] - before[k]).abs().max()) for k in before)


def all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values()
               if torch.is_tensor(v) and v.is_floating_point())


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def one_rank_env() -> dict:
    """The generic launcher variables of a one-rank job, so DDP and DeepSpeed start a real
    process group (NCCL on a GPU, gloo on the CPU)."""
    from mmdist.engine.distributed import free_port

    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port())}


def train(ctx, run_dir: Path, overrides: list[str], env_extra: dict | None = None,
          timeout: float | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m mmdist.train`` on configs/tiny.yaml in ``run_dir``; (process, summary.json
    or {})."""
    env = {**os.environ, **(env_extra or {})}
    command = [sys.executable, "-m", "mmdist.train", "--config", str(TINY),
               f"output_dir={run_dir}", f"engine.device={ctx.device}", "trainer.image_log_every=0",
               *overrides]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout or ctx.timeout_s)
    path = run_dir / "summary.json"
    return done, (json.loads(path.read_text()) if path.is_file() else {})


def failure(done: subprocess.CompletedProcess) -> dict:
    tail = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    return {"exit": done.returncode, "stderr": " / ".join(tail[-3:])}


RESUME_TOLERANCE = 1e-4
"""Largest parameter difference between a resumed run and the uninterrupted one on CUDA: the
decoder's bilinear upsampling has no deterministic CUDA backward (torch warns and keeps it), so
its gradients differ in the last bits between runs; Adam's steps of lr 1e-4 keep the effect far
below this. On the CPU the two runs are bit for bit equal."""


def resume_row(check: str, case: str, straight: Path, split: Path, steps: int, every: int,
               run_split, started: float):
    """Train ``split`` to ``every`` steps, resume it to ``steps`` (``run_split(overrides)``
    returns the finished process), and judge it against the uninterrupted ``straight`` run:
    resumed where it stopped, same weights (RESUME_TOLERANCE), schedule and EMA updates."""
    import time

    from mmdist.engine import checkpoint as ckpt
    from mmdist.gpucheck.report import judged

    for overrides in ([f"trainer.max_steps={every}"], ["trainer.resume=true"]):
        done = run_split(overrides)
        if done.returncode != 0:
            return judged(check, case, {"runs exit 0": False}, failure(done),
                          time.perf_counter() - started)
    resumed = json.loads((split / "summary.json").read_text())
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, steps))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(split, steps))
    difference = max(float((a["model"][k].double() - b["model"][k].double()).abs().max())
                     for k in a["model"])
    assertions = {"resumed at the checkpoint": resumed.get("start_step") == every,
                  "same weights as the uninterrupted run": difference <= RESUME_TOLERANCE,
                  "same schedule": a["scheduler"] == b["scheduler"]}
    if "ema" in a:
        assertions["same EMA updates"] = a["ema"]["updates"] == b.get("ema", {}).get("updates")
    return judged(check, case, assertions, {"max_param_difference": difference,
                                            "tolerance": RESUME_TOLERANCE},
                  time.perf_counter() - started)
