"""One training step's gradients on the GPU against the CPU's, same batch and weights.

Both sides run fp32 with TF32 off and dropout 0, every pseudo-label kept (tau 0), from one
initialisation; the truth is the same step in float64 on the CPU. The GPU's relative gradient
error against it must be at most GRADIENT_TOLERANCE, with the CPU's own fp32 error shown for scale.
"""

from __future__ import annotations

import copy
import time

import torch

from mmdist.gpucheck.common import random_batch, strict_fp32
from mmdist.gpucheck.registry import SALIENCY
from mmdist.gpucheck.report import judged

GRADIENT_TOLERANCE = 1e-4
"""Relative L2 error of all parameter gradients against float64. fp32 rounds at 6e-8 per
operation; through this network's ~40 layers and reductions of up to 2304 terms, exact fp32 on
either device lands near 1e-6 (the CPU's own figure is in the row). 1e-4 leaves two orders of
magnitude for cuDNN's different (equally exact) algorithms, and still fails TF32, whose 10-bit
mantissa (2^-11 = 5e-4 per rounding) puts gradients 1e-3 or more off, and any real defect
(a missed term, a wrong saliency, a stale buffer), which is off by far more."""
SIZE, PER_STREAM, WIDTH = 64, 2, 0.5


def step_gradients(model, batch, device) -> tuple[float, torch.Tensor]:
    """(loss, all parameter gradients flattened, in float64) of one training step."""
    from mmdist.config import LossConfig
    from mmdist.engine.step import training_losses
    from mmdist.model import VARIANTS

    model = model.to(device)
    loss, _ = training_losses(model, batch.to(device), VARIANTS["multimix"], LossConfig(tau=0.0), 1)
    loss.backward()
    grads = [p.grad.detach().double().cpu().flatten() for p in model.parameters()
             if p.grad is not None]
    return float(loss), torch.cat(grads)


def relative(got: torch.Tensor, truth: torch.Tensor) -> float:
    return float((got - truth).norm() / truth.norm())


def gpu_against_cpu(ctx, emit) -> None:
    from mmdist.config import ModelConfig
    from mmdist.model import build_model

    strict_fp32()
    for mode in SALIENCY:
        tick = time.perf_counter()
        torch.manual_seed(3)
        model = build_model(ModelConfig(variant="multimix", saliency=mode, width=WIDTH,
                                        dropout=0.0))
        truth_loss, truth = step_gradients(copy.deepcopy(model).double(),
                                           random_batch(PER_STREAM, SIZE, torch.float64),
                                           torch.device("cpu"))
        batch = random_batch(PER_STREAM, SIZE)
        cpu_loss, cpu = step_gradients(copy.deepcopy(model), batch, torch.device("cpu"))
        gpu_loss, gpu = step_gradients(copy.deepcopy(model), batch, torch.device("cuda"))
        same_count = gpu.numel() == truth.numel() == cpu.numel()
        gpu_error = relative(gpu, truth) if same_count else float("inf")
        detail = {"gpu_error": gpu_error, "cpu_error": relative(cpu, truth) if same_count else None, "tolerance": GRADIENT_TOLERANCE,
                  "loss_gpu": gpu_loss, "loss_cpu": cpu_loss}
        emit(judged("gradients", f"{mode} fp32 strict", {
            "same gradient count": same_count,
            "gpu gradients within tolerance": gpu_error <= GRADIENT_TOLERANCE,
            "same loss": abs(gpu_loss - truth_loss) <= GRADIENT_TOLERANCE * abs(truth_loss),
        }, detail, time.perf_counter() - tick))
