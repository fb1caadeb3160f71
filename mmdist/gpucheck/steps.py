"""Training steps on the device for every precision x saliency mode, and the step benchmark."""

from __future__ import annotations

import argparse
import math
import time

import torch

from mmdist.gpucheck.report import FAILED, PASSED, Row

PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("none", "detached", "differentiable")
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.85, "fp16": 0.95}
"""Saliency cosine to fp32 a precision must reach (bf16's 8-bit mantissa, amplified by an input
gradient, measured at 0.85-0.9 on the CPU)."""


def _batch(size: int, per_stream: int, device):
    from mmdist.bench.step import random_batch
    from mmdist.model import VARIANTS

    generator = torch.Generator().manual_seed(0)
    return random_batch(VARIANTS["multimix"].streams, per_stream, size, generator).to(device)


def _saliency(model, images, precision: str, device) -> torch.Tensor:
    from mmdist.engine.precision import autocast
    from mmdist.model.saliency import input_saliency

    model.eval()
    with autocast(device, precision):
        _, _, saliency = input_saliency(images, model.encode, "detached",
                                        model.saliency_inner_scale)
    model.train()
    return saliency.float().flatten()


def training_steps(ctx) -> list[Row]:
    from mmdist.config import EngineConfig, LossConfig, ModelConfig
    from mmdist.engine.precision import autocast
    from mmdist.engine.single import Strategy
    from mmdist.engine.step import training_losses
    from mmdist.model import VARIANTS, build_model

    rows = []
    batch = None
    reference = None
    for precision in PRECISIONS:
        for mode in MODES:
            tick = time.perf_counter()
            strategy = Strategy(EngineConfig(strategy="single", device=ctx.device_name,
                                             precision=precision))
            torch.manual_seed(0)
            model = build_model(ModelConfig(variant="multimix", saliency=mode, width=ctx.width))
            wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
            batch = batch if batch is not None else _batch(ctx.size, ctx.per_stream,
                                                           strategy.device)
            detail = {}
            if mode != "none":
                saliency = _saliency(model, batch.seg_labeled, precision, strategy.device)
                if reference is None:
                    reference = _saliency(model, batch.seg_labeled, "fp32", strategy.device)
                detail["saliency_cosine"] = float(torch.nn.functional.cosine_similarity(
                    saliency, reference, dim=0))
            if strategy.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(strategy.device)
            losses = []
            for step in range(ctx.steps):
                with autocast(strategy.device, precision):
                    loss, _ = training_losses(wrapped, batch, VARIANTS["multimix"], LossConfig(),
                                              step)
                losses.append(float(loss.detach()))
                strategy.backward_step(loss)
            strategy.synchronize()
            detail.update(loss_first=losses[0], loss_last=losses[-1],
                          skipped_steps=strategy.skipped_steps)
            if strategy.device.type == "cuda":
                detail["peak_mib"] = torch.cuda.max_memory_allocated(strategy.device) / 2**20
            ok = all(math.isfinite(v) for v in losses) and strategy.skipped_steps < ctx.steps
            ok = ok and detail.get("saliency_cosine", 1.0) >= MIN_COSINE[precision]
            rows.append(Row("steps", f"{precision} {mode}", PASSED if ok else FAILED, detail,
                            time.perf_counter() - tick))
    return rows


def step_benchmark(ctx) -> list[Row]:
    """``bench step --compare`` at ctx.bench_size for fp32 and bf16 (one row per arm)."""
    from mmdist.bench import step as bench

    rows = []
    for precision in ("fp32", "bf16"):
        parser = argparse.ArgumentParser()
        bench.add_arguments(parser)
        args = parser.parse_args(["--compare", "--size", str(ctx.bench_size), "--batch", "10",
                                  "--steps", str(ctx.bench_steps), "--warmup", "2",
                                  "--width", str(ctx.bench_width), "--device", ctx.device_name,
                                  "--precision", precision, "--threads", str(ctx.threads)])
        tick = time.perf_counter()
        result = bench.run(args)
        for name, arm in result["arms"].items():
            detail = {"img_per_s": arm["img_per_s"], "step_s": arm["step_s_median"]}
            if "peak_gpu_mib" in arm:
                detail["peak_mib"] = arm["peak_gpu_mib"]
            ok = math.isfinite(arm["img_per_s"]) and arm["img_per_s"] > 0
            rows.append(Row("bench", f"{precision} {name} {ctx.bench_size}px",
                            PASSED if ok else FAILED, detail, time.perf_counter() - tick))
            tick = time.perf_counter()
    return rows
