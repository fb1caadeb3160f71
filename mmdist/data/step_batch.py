"""What one training step consumes (StepBatch), and the one uint8 -> float conversion of images.

Batches leave the host as uint8 (a quarter of float32's bytes), pinned when the training device is
CUDA, and become model input on the device (StepBatch.as_model_input), exactly to_model_input's
values on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float32 in [-1, 1] (the reference's Normalize(0.5, 0.5))."""
    return images.float().div_(127.5).sub_(1.0)


_MODEL_INPUT_TABLES: dict[torch.device, torch.Tensor] = {}


def _model_input_on_device(images: torch.Tensor) -> torch.Tensor:
    """to_model_input's values, bit for bit, on the images' device: to_model_input itself on a
    CPU (where a table's gather is 15x slower), elsewhere a table of the 256 levels made by it on
    the CPU, because CUDA divides by a scalar as a multiplication by its reciprocal, which changes
    111 of the 256 values in the last bit."""
    if images.device.type == "cpu":
        return to_model_input(images)
    return model_input_table(images.device)[images.int()]


def model_input_table(device) -> torch.Tensor:
    """float32 (256,): to_model_input of every uint8 level, computed on the CPU, on ``device``."""
    table = _MODEL_INPUT_TABLES.get(device)
    if table is None:
        table = to_model_input(torch.arange(256, dtype=torch.uint8)).to(device)
        _MODEL_INPUT_TABLES[device] = table
    return table


@dataclass
class StepBatch:
    """What one training step consumes; a field is None when the variant does not use it.

    From the step sources, images are uint8 (N, 1, H, W) and masks uint8 (N, 1, H, W) in {0, 1};
    ``as_model_input()`` makes them float32 in [-1, 1] and float32 in {0, 1}. Targets are int64
    (N,).
    """

    seg_labeled: Optional[torch.Tensor] = None
    seg_labeled_mask: Optional[torch.Tensor] = None
    seg_unlabeled: Optional[torch.Tensor] = None
    cls_labeled: Optional[torch.Tensor] = None
    cls_labeled_target: Optional[torch.Tensor] = None
    cls_unlabeled_weak: Optional[torch.Tensor] = None
    cls_unlabeled_strong: Optional[torch.Tensor] = None
    cls_unlabeled_weak2: Optional[torch.Tensor] = None

    def to(self, device, non_blocking: bool = False, channels_last: bool = False) -> "StepBatch":
        """Move every tensor to ``device``; images and masks optionally to NHWC memory order."""
        def move(value):
            if value is None:
                return None
            if channels_last and value.dim() == 4:
                return value.to(device, non_blocking=non_blocking,
                                memory_format=torch.channels_last)
            return value.to(device, non_blocking=non_blocking)
        return StepBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> "StepBatch":
        """Every tensor in page-locked memory, so that ``to(cuda, non_blocking=True)`` copies
        asynchronously (also what DataLoader(pin_memory=True) calls on a batch it got)."""
        return StepBatch(**{f.name: None if v is None else v.pin_memory()
                            for f in fields(self) for v in [getattr(self, f.name)]})

    def as_model_input(self) -> "StepBatch":
        """uint8 images -> float32 in [-1, 1] (exactly to_model_input), uint8 masks -> float32
        {0, 1}, on the device they are on; float tensors are model input already and pass
        through, as do the targets."""
        def convert(name, value):
            if value is None or value.dtype != torch.uint8:
                return value
            return value.float() if name.endswith("_mask") else _model_input_on_device(value)
        return StepBatch(**{f.name: convert(f.name, getattr(self, f.name)) for f in fields(self)})

    @property
    def image_count(self) -> int:
        """Images in the step (masks and targets not counted)."""
        return sum(v.shape[0] for f in fields(self) for v in [getattr(self, f.name)]
                   if v is not None and v.dim() == 4 and not f.name.endswith("_mask"))
