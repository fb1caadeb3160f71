"""One training step's gradients on the GPU against the CPU's, same batch and weights.

Both sides run fp32 with TF32 off and dropout 0, every pseudo-label kept (tau 0), from one
initialisation; the truth is the same step in float64 on the CPU. How far fp32 can be from the
truth depends on the step's conditioning (measured here: 3e-6 relative with a saliency bridge,
1.6e-4 without, where the instance norms of the deepest 2x2 maps amplify rounding), so the bound
is relative to the CPU's own fp32 error: the GPU's must be within FP32_FACTOR of it.
"""

from __future__ import annotations

import copy
import time

import torch

from mmdist.gpucheck.common import random_batch, strict_fp32
from mmdist.gpucheck.registry import SALIENCY
from mmdist.gpucheck.report import judged

FP32_FACTOR, FP32_FLOOR = 32.0, 1e-6
"""The GPU's relative gradient error against float64 may be at most FP32_FACTOR times the CPU's
fp32 error (plus FP32_FLOOR for a CPU that happens to land very close). Both devices round at
fp32's 2^-24; cuDNN picks other, equally exact convolution algorithms and summation orders
(Winograd among them, a few times the rounding of a direct convolution), hence a factor and not
equality. TF32 rounds convolution and matmul inputs at 2^-11, 8192 times coarser, and puts the
error hundreds of times past this bound; a real defect (a missed loss term, a wrong saliency, a
stale buffer) is off by far more."""


def fp32_bound(cpu_error: float) -> float:
    return FP32_FACTOR * cpu_error + FP32_FLOOR


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
    return float(loss.detach()), torch.cat(grads)


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
        cpu_error = relative(cpu, truth) if same_count else float("inf")
        loss_bound = fp32_bound(abs(cpu_loss - truth_loss) / abs(truth_loss))
        detail = {"gpu_error": gpu_error, "cpu_error": cpu_error, "bound": fp32_bound(cpu_error),
                  "loss_gpu": gpu_loss, "loss_cpu": cpu_loss}
        emit(judged("gradients", f"{mode} fp32 strict", {
            "same gradient count": same_count,
            "gpu gradients as exact as the cpu's": gpu_error <= fp32_bound(cpu_error),
            "same loss": abs(gpu_loss - truth_loss) <= loss_bound * abs(truth_loss),
        }, detail, time.perf_counter() - tick))
