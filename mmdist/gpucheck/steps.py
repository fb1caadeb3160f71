"""Training steps on the device for every precision x saliency mode, and the step benchmark.

A steps row passes only when its losses stayed finite, the parameters moved (and stayed finite),
the fp16 GradScaler took more than half of the steps (a scale that never backs off skips them
all), bf16 and fp32 skipped none, and, for a saliency mode, the bf16/fp16 saliency points where
the fp32 one does, fp32 computed with TF32 off (a reference, not the run compared with itself).
"""

from __future__ import annotations

import argparse
import time

import torch

from mmdist.gpucheck.common import (all_finite, finite, largest_change, random_batch, strict_fp32,
                                    weights)
from mmdist.gpucheck.registry import PRECISIONS, SALIENCY
from mmdist.gpucheck.report import judged

MIN_COSINE = {"bf16": 0.85, "fp16": 0.95}
"""Saliency cosine to strict fp32 a precision must reach: the input gradient amplifies the
autocast error about 30x; measured on the CPU at 0.85-0.92 for bf16 (8-bit mantissa) and 0.99
for fp16. A saliency that is noise or zero scores near 0."""


def sizes(ctx) -> dict:
    """Model and batch per device. Steps: a healthy GradScaler starting at 2**16 skips a few
    steps while it backs off (2 of the first 4 on the CPU here), so a run long enough for
    "more than half taken" to separate that from a scale that never backs off."""
    if ctx.cuda:  # the paper's model at 128 px
        return {"size": 128, "per_stream": 4, "width": 1.0, "steps": 12}
    return {"size": 32, "per_stream": 2, "width": 0.25, "steps": 8}


def saliency_map(model, images, precision: str, device) -> torch.Tensor:
    """The detached input saliency of ``images`` (N, 1, H, W) under ``precision``, flattened
    to float32; the model in eval mode (no dropout)."""
    from mmdist.engine.precision import autocast
    from mmdist.model.saliency import input_saliency

    model.eval()
    with autocast(device, precision):
        _, _, saliency = input_saliency(images, model.encode, "detached",
                                        model.saliency_inner_scale)
    model.train()
    return saliency.float().flatten()


def _model(width: float, mode: str):
    from mmdist.config import ModelConfig
    from mmdist.model import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(variant="multimix", saliency=mode, width=width))


def training_steps(ctx, emit) -> None:
    from mmdist.config import EngineConfig, LossConfig
    from mmdist.engine.devices import configure_numerics
    from mmdist.engine.precision import autocast
    from mmdist.engine.single import SingleProcessStrategy
    from mmdist.engine.step import training_losses
    from mmdist.model import VARIANTS

    s = sizes(ctx)
    device = torch.device(ctx.device)
    batch = random_batch(s["per_stream"], s["size"]).to(device)
    strict_fp32()
    reference = saliency_map(_model(s["width"], "detached").to(device), batch.seg_labeled, "fp32",
                             device)
    for precision in PRECISIONS:
        for mode in SALIENCY:
            tick = time.perf_counter()
            engine = EngineConfig(strategy="single", device=ctx.device, precision=precision)
            configure_numerics(engine, False)  # the TF32 setting training uses
            strategy = SingleProcessStrategy(engine)
            model = _model(s["width"], mode)
            wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
            before = weights(model)
            assertions, detail = {}, {"tf32": bool(engine.tf32)}
            if mode != "none" and precision in MIN_COSINE:
                cosine = float(torch.nn.functional.cosine_similarity(
                    saliency_map(model, batch.seg_labeled, precision, device), reference, dim=0))
                detail["saliency_cosine"] = cosine
                assertions["saliency near strict fp32"] = cosine >= MIN_COSINE[precision]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            losses = []
            for step in range(s["steps"]):
                with autocast(device, precision):
                    loss, _ = training_losses(wrapped, batch, VARIANTS["multimix"], LossConfig(),
                                              step)
                losses.append(float(loss.detach()))
                strategy.backward_step(loss)
            after = weights(model)
            taken = s["steps"] - strategy.skipped_steps
            detail.update(loss_first=losses[0], loss_last=losses[-1], steps=s["steps"],
                          skipped=strategy.skipped_steps, moved=largest_change(before, after))
            if precision == "fp16":
                detail["scale"] = strategy.scaler.get_scale()
                assertions["most steps taken"] = taken > s["steps"] / 2
            else:
                assertions["no step skipped"] = taken == s["steps"]
            if device.type == "cuda":
                detail["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            assertions["finite losses"] = finite(*losses)
            assertions["parameters moved"] = detail["moved"] > 0
            assertions["finite parameters"] = all_finite(after)
            emit(judged("steps", f"{precision} {mode}", assertions, detail,
                        time.perf_counter() - tick))


def step_benchmark(ctx, emit) -> None:
    """``bench step --compare`` in fp32 (the TF32 setting training uses) and bf16. Asserted: on
    CUDA, bf16 needs less memory than fp32 for the saliency arms (autocast really runs in half
    width), and the differentiable arm more than the detached one (its double backward keeps
    the graph); on the CPU, that the differentiable step is slower than the one without
    saliency. The figures (img/s, step time, peak memory) are in the row."""
    from mmdist.bench import step as bench
    from mmdist.config import EngineConfig
    from mmdist.engine.devices import configure_numerics

    size = 256 if ctx.cuda else 64
    tick = time.perf_counter()
    arms, detail = {}, {"device": ctx.device, "size": size}
    for precision in ("fp32", "bf16"):
        configure_numerics(EngineConfig(device=ctx.device, precision=precision), False)
        parser = argparse.ArgumentParser()
        bench.add_arguments(parser)
        args = parser.parse_args(["--compare", "--size", str(size), "--batch", "10",
                                  "--steps", "5" if ctx.cuda else "2", "--warmup", "2",
                                  "--width", "1.0" if ctx.cuda else "0.25",
                                  "--device", ctx.device, "--precision", precision,
                                  "--threads", "4" if ctx.cuda else "1"])
        result = bench.run(args)
        detail["gpu"] = result.get("gpu", "-")
        for name in ("none", "detached", "differentiable"):
            arm = arms[precision, name] = result["arms"][name]
            detail[f"{precision}_{name}_img_s"] = arm["img_per_s"]
            if "peak_gpu_mib" in arm:
                detail[f"{precision}_{name}_peak_mib"] = arm["peak_gpu_mib"]
    assertions = {"finite timings": finite(*(a["img_per_s"] for a in arms.values()))}
    if ctx.cuda:
        for name in ("detached", "differentiable"):
            assertions[f"bf16 {name} smaller than fp32"] = (
                arms["bf16", name]["peak_gpu_mib"] < arms["fp32", name]["peak_gpu_mib"])
        for precision in ("fp32", "bf16"):
            assertions[f"{precision} differentiable larger than detached"] = (
                arms[precision, "differentiable"]["peak_gpu_mib"]
                > arms[precision, "detached"]["peak_gpu_mib"])
    else:
        assertions["differentiable slower than none"] = (
            arms["fp32", "differentiable"]["img_per_s"] < arms["fp32", "none"]["img_per_s"])
    emit(judged("bench", "256px fp32 vs bf16", assertions, detail, time.perf_counter() - tick))
