"""The trainer end to end on the device: one process and one-rank DDP in bf16 and fp16 with EMA,
validation and best.pt; a DDP resume; DALI's GPU pipeline feeding a run; a compiled run.

A run's row passes when it completed every step, took more than half of them (fp16; bf16 none
skipped), its final weights moved from the initial ones and are finite, the EMA counted one
update per step taken, the validation metrics are finite, and best.pt exists with finite raw and
EMA weights.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from mmdist.gpucheck.common import (TINY, all_finite, failure, finite, largest_change,
                                    one_rank_env, resume_row, train)
from mmdist.gpucheck.report import judged, not_run

STEPS, EVERY = 6, 3
FP16_STEPS = 10
"""fp16 runs are longer: a healthy GradScaler skips a few steps while it backs off from 2**16
(2 of the first 4 in a CPU run of this model), and "more than half taken" must tell that from a
scale that never backs off."""
RUN = [f"trainer.max_steps={STEPS}", f"trainer.val_every={EVERY}",
       f"trainer.checkpoint_every={EVERY}", "trainer.log_every=3", "model.ema_decay=0.9",
       "trainer.image_log_every=0"]


def initial_weights(config) -> dict:
    """The weights a run starts from (the trainer seeds ``config.seed`` before building)."""
    from mmdist.engine import rng
    from mmdist.gpucheck.common import weights
    from mmdist.model import build_model

    rng.seed_all(config.seed)
    return weights(build_model(config.model))


def steps_for(precision: str) -> int:
    return FP16_STEPS if precision == "fp16" else STEPS


def length(precision: str) -> list[str]:
    """The overrides of a run in ``precision`` (after RUN: the later override wins)."""
    return [f"engine.precision={precision}", f"trainer.max_steps={steps_for(precision)}"]


def judge_run(ctx, check: str, case: str, run_dir: Path, summary: dict, precision: str,
              seconds: float, extra: dict | None = None):
    """The row of a finished run (see the module docstring)."""
    from mmdist.config import load_config
    from mmdist.engine import checkpoint as ckpt

    config = load_config(run_dir / "config.yaml")
    steps, skipped = summary.get("steps", 0), summary.get("skipped_steps", 0)
    final = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, steps))
    best_path = ckpt.best_checkpoint_path(run_dir)
    best = ckpt.load_checkpoint(best_path) if best_path.is_file() else {}
    model = {k: v.float() for k, v in final["model"].items() if v.is_floating_point()}
    moved = largest_change(initial_weights(config), model)
    val = {k: v for k, v in summary.items() if k.startswith(("val_acc", "val_dice", "val_ema"))}
    detail = {"device": summary.get("device"), "steps": steps, "skipped": skipped,
              "moved": moved, "best_step": (best.get("selection") or {}).get("step"),
              **val, **(extra or {})}
    assertions = {
        "completed": summary.get("status") == "completed" and steps == steps_for(precision),
        "on the device": str(summary.get("device", "")).startswith(ctx.device),
        "steps taken": (skipped < steps / 2) if precision == "fp16" else skipped == 0,
        "parameters moved": moved > 0, "finite parameters": all_finite(model),
        "ema updated per step taken": final.get("ema", {}).get("updates") == steps - skipped,
        "finite validation": bool(val) and finite(*val.values()),
        "best.pt with finite raw and EMA weights": bool(best) and all_finite(best["model"])
        and all_finite(best.get("ema", {}).get("model", {})) and "ema" in best,
    }
    return judged(check, case, assertions, detail, seconds)


def _fit(run_dir: Path, overrides: list[str]):
    from mmdist.config import load_config
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY, [f"output_dir={run_dir}", *overrides]))
    summary = trainer.fit()
    trainer.strategy.close()
    return trainer, summary


def precisions(ctx, check: str, form: str, emit):
    """(precision, case) for bf16 and fp16; fp16 on the CPU is reported "not run" instead."""
    for precision in ("bf16", "fp16"):
        case = form.format(precision)
        if precision == "fp16" and not ctx.cuda:
            emit(not_run(check, case, "fp16 needs CUDA (refused on the CPU)"))
            continue
        yield precision, case


def single_runs(ctx, emit) -> None:
    for precision, case in precisions(ctx, "trainer", "single {} ema+val+best", emit):
        tick = time.perf_counter()
        run_dir = ctx.work_dir / precision
        _, summary = _fit(run_dir, [f"engine.device={ctx.device}", "engine.strategy=single",
                                    *RUN, *length(precision)])
        emit(judge_run(ctx, "trainer", case, run_dir, summary, precision,
                       time.perf_counter() - tick))


def ddp_runs(ctx, emit) -> None:
    """``python -m mmdist.train`` as one DDP rank (NCCL on CUDA), bf16 and fp16; then the bf16
    run stopped at step 3 and resumed, against the uninterrupted one."""
    common = ["engine.strategy=ddp", "trainer.deterministic=true", *RUN]
    for precision, case in precisions(ctx, "ddp", "1-rank {} ema+val+best", emit):
        tick = time.perf_counter()
        run_dir = ctx.work_dir / precision
        done, summary = train(ctx, run_dir, [*common, *length(precision)], one_rank_env())
        if done.returncode != 0:
            emit(judged("ddp", case, {"run exits 0": False}, failure(done)))
            continue
        emit(judge_run(ctx, "ddp", case, run_dir, summary, precision, time.perf_counter() - tick,
                       {"strategy": summary.get("strategy")}))
    split, bf16 = ctx.work_dir / "bf16_split", [*common, "engine.precision=bf16"]
    emit(resume_row("ddp", "1-rank bf16 resume", ctx.work_dir / "bf16", split, STEPS, EVERY,
                    lambda more: train(ctx, split, [*bf16, *more], one_rank_env())[0],
                    time.perf_counter()))


def dali_run(ctx, emit) -> None:
    """A bf16 run fed by DALI (its GPU pipeline on CUDA): the run's row as above, and the
    trainer really read DALI's step source."""
    tick = time.perf_counter()
    run_dir = ctx.work_dir / "dali"
    trainer, summary = _fit(run_dir, [
        f"engine.device={ctx.device}", "engine.precision=bf16", "engine.strategy=single",
        "data.augment.backend=dali", f"data.augment.device={'gpu' if ctx.cuda else 'cpu'}", *RUN])
    row = judge_run(ctx, "dali", "gpu pipeline in training", run_dir, summary, "bf16",
                    time.perf_counter() - tick, {"source": type(trainer.source).__name__})
    if type(trainer.source).__name__ != "DaliStepSource":
        row = judged("dali", row.case, {"fed by DALI": False}, row.detail, row.seconds)
    emit(row)


def _compile_field() -> str:
    from mmdist.config import EngineConfig, TrainerConfig

    for section, cls in (("engine", EngineConfig), ("trainer", TrainerConfig)):
        if any(f.name == "compile" for f in dataclasses.fields(cls)):
            return f"{section}.compile"
    return ""


def compile_unsupported() -> str:
    """Why the compiled trainer run cannot run ('' when the trainer has a compile setting)."""
    return "" if _compile_field() else ("the trainer has no compile setting (bench step "
                                        "--compile is the only compiled path)")


def compiled_run(ctx, emit) -> None:
    tick = time.perf_counter()
    run_dir = ctx.work_dir / "compiled"
    trainer, summary = _fit(run_dir, [f"engine.device={ctx.device}", "engine.precision=bf16",
                                      "engine.strategy=single", f"{_compile_field()}=true", *RUN])
    compiled = any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule)
                   for m in trainer.strategy.unwrap().modules())
    row = judge_run(ctx, "compile", "trainer --compile", run_dir, summary, "bf16",
                    time.perf_counter() - tick)
    if not compiled:
        row = judged("compile", row.case, {"parts compiled": False}, row.detail, row.seconds)
    emit(row)
