"""DeepSpeed on the device: ZeRO-0 fp16, ZeRO-2 bf16 and fp16 as one rank, and a ZeRO-2 resume.

A trained row passes when the run completed, the steps DeepSpeed skipped (fp16 overflow) are
fewer than half (none under bf16), and the full weights it saved moved and are finite. ZeRO-1/2
with fp16 may instead be refused at start, with exit status 2 and one line naming bf16: that
refusal is the documented answer to a loss scale that cannot back off there, and reads as such.
"""

from __future__ import annotations

import time

from mmdist.gpucheck.common import failure, one_rank_env, resume_row, train
from mmdist.gpucheck.report import judged, not_run

STEPS, EVERY = 4, 2
FP16_STEPS = 8
"""fp16 runs are longer, so that "more than half taken" tells the steps a healthy loss scale
skips while it backs off from 2**16 from a scale that never backs off."""


def _overrides(stage: int, precision: str) -> list[str]:
    return ["engine.strategy=deepspeed",
            f"engine.deepspeed_config=configs/deepspeed/zero{stage}.json",
            f"engine.precision={precision}",
            f"trainer.max_steps={FP16_STEPS if precision == 'fp16' else STEPS}",
            f"trainer.checkpoint_every={EVERY}", "trainer.deterministic=true"]


def _judge_trained(ctx, case: str, run_dir, summary: dict, precision: str, seconds: float):
    from mmdist.config import load_config
    from mmdist.engine import checkpoint as ckpt
    from mmdist.gpucheck.common import all_finite, largest_change
    from mmdist.gpucheck.trainer_runs import initial_weights

    steps, skipped = summary.get("steps", 0), summary.get("skipped_steps", 0)
    final = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, steps))["model"]
    model = {k: v.float() for k, v in final.items() if v.is_floating_point()}
    moved = largest_change(initial_weights(load_config(run_dir / "config.yaml")), model)
    return judged("deepspeed", case, {
        "completed": summary.get("status") == "completed"
        and steps == (FP16_STEPS if precision == "fp16" else STEPS),
        "on the device": str(summary.get("device", "")).startswith(ctx.device),
        "steps taken": (skipped < steps / 2) if precision == "fp16" else skipped == 0,
        "parameters moved": moved > 0, "finite parameters": all_finite(model),
    }, {"steps": steps, "skipped": skipped, "moved": moved, "device": summary.get("device")},
        seconds)


def deepspeed_runs(ctx, emit) -> None:
    for stage, precision in ((0, "fp16"), (2, "bf16"), (2, "fp16")):
        case = f"ZeRO-{stage} {precision}"
        if precision == "fp16" and not ctx.cuda:
            emit(not_run("deepspeed", case, "DeepSpeed refuses fp16 on the CPU"))
            continue
        tick = time.perf_counter()
        run_dir = ctx.work_dir / f"zero{stage}_{precision}"
        done, summary = train(ctx, run_dir, _overrides(stage, precision), one_rank_env())
        refused = done.returncode == 2 and "bf16" in done.stderr
        if stage > 0 and precision == "fp16" and refused:
            emit(judged("deepspeed", case, {"refused at start naming bf16": True},
                        {"refusal": done.stderr.strip().splitlines()[-1][:200]},
                        time.perf_counter() - tick))
        elif done.returncode != 0:
            emit(judged("deepspeed", case, {"run exits 0": False}, failure(done),
                        time.perf_counter() - tick))
        else:
            emit(_judge_trained(ctx, case, run_dir, summary, precision,
                                time.perf_counter() - tick))
    split = ctx.work_dir / "zero2_bf16_split"
    emit(resume_row("deepspeed", "ZeRO-2 bf16 resume", ctx.work_dir / "zero2_bf16", split, STEPS,
                    EVERY, lambda more: train(ctx, split, [*_overrides(2, "bf16"), *more],
                                              one_rank_env())[0], time.perf_counter()))
