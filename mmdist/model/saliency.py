"""The saliency bridge: |d max-class-score / d input|, computed inside the model's forward.

Measured traps (see the project notes): calling ``.backward()`` on the score inside a forward
silently adds the score's gradient to every parameter's ``.grad``; a second forward through a
DDP-wrapped model breaks DDP's reduction bookkeeping. So the saliency comes from the *same*
encoder forward that feeds the decoder, through ``torch.autograd.grad`` on the input alone.

An inner gradient that overflows (fp16) gives an inf/NaN saliency, hence a non-finite loss: the
strategy then skips that step on every rank (mmdist.engine.strategy.Strategy.backward_step), so
nothing here checks it (a check would cost a host sync inside the forward).
"""

from __future__ import annotations

from typing import Callable

import torch

SALIENCY_MODES = ("none", "detached", "differentiable")


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 to float32; leave float32 and float64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def input_saliency(
    images: torch.Tensor,
    encode: Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]],
    mode: str,
    inner_scale: float = 1.0,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run ``encode`` on ``images`` and take the gradient of the predicted class score.

    images: (N, 1, H, W) float. encode: images -> (encoder features, class logits (N, K)).
    mode: 'detached' (a constant decoder input, the reference behaviour) or 'differentiable'
    (create_graph=True: losses on the decoder output reach the encoder through the saliency,
    a second-order gradient).
    inner_scale: the score is multiplied by this before the gradient and the result divided by it
    after, so fp16 input gradients do not underflow; a power of two makes it exact in fp32.

    Returns (features, logits, saliency (N, 1, H, W) >= 0, in the input's dtype).
    Works under torch.no_grad() (it re-enables grad locally); not under inference_mode.
    """
    if mode not in ("detached", "differentiable"):
        raise ValueError(f"saliency mode must be 'detached' or 'differentiable', got {mode!r}")
    differentiable = mode == "differentiable"
    with torch.enable_grad():
        leaf = images.detach().requires_grad_(True)
        features, logits = encode(leaf)
        # Sum over the batch: each image's score depends only on that image (InstanceNorm,
        # no batch statistics), so one gradient call gives every image its own map.
        score = at_least_fp32(logits).max(dim=1).values.sum() * inner_scale
        # retain_graph: the encoder graph is reused by the losses after this call.
        (grad,) = torch.autograd.grad(score, leaf, create_graph=differentiable, retain_graph=True)
    saliency = grad.abs() / inner_scale
    if not differentiable:
        saliency = saliency.detach()
    return features, logits, saliency
