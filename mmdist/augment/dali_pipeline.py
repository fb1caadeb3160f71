"""The DALI pipeline of one training step: each image read once, every view a stream needs.

Declared here, in a module of its own, because pipelines with conditionals (the per-sample choice
of RandAugment op) are traced by DALI's AutoGraph, which needs the function's source file.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali import fn, pipeline_def

from mmdist.augment.dali_ops import APPEARANCE_INPUTS, appearance, apply_pool_op, weak_view


@dataclass(frozen=True)
class Read:
    """One external input per step: a batch of images (and masks) read once, and the views made
    of it. ``views`` pairs each output stream name with 'weak', 'strong' or 'appearance' (the
    weak view, then the appearance chain; segmentation streams with data.augment.seg_appearance)."""

    name: str
    views: tuple[tuple[str, str], ...]
    with_mask: bool = False

    def input_count(self, n_ops: int) -> int:
        """Inputs the host feeds: images (+ masks), then per view flip and anchor, and for a
        strong view (kind, value, matrix) per RandAugment slot, for an appearance view its
        APPEARANCE_INPUTS."""
        extra = {"weak": 0, "strong": 3 * n_ops, "appearance": APPEARANCE_INPUTS}
        per_view = sum(2 + extra[kind] for _, kind in self.views)
        return 1 + int(self.with_mask) + per_view

    def output_names(self) -> list[str]:
        names = []
        for stream, _ in self.views:
            names.append(stream)
            if self.with_mask:
                names.append(f"{stream}_mask")
        return names


@pipeline_def(enable_conditionals=True)
def step_pipeline(reads: tuple[Read, ...], callbacks, size: int, n_ops: int, device: str):
    """Outputs, in the order of ``Read.output_names`` over ``reads``: uint8 HWC views (1 channel)
    on ``device``, masks in {0, 1}; they become model input on the training device (a quarter of
    float32's bytes to move). ``callbacks[i](batch_info)`` returns the host inputs of ``reads[i]``."""
    outputs = []
    for read, callback in zip(reads, callbacks):
        count = read.input_count(n_ops)
        layouts = ["HWC"] * (1 + int(read.with_mask)) + [""] * (count - 1 - int(read.with_mask))
        if any(kind == "appearance" for _, kind in read.views):
            layouts[-1] = "HWC"  # the appearance noise field, the read's last input
        inputs = list(fn.external_source(source=callback, num_outputs=count, batch=True,
                                         batch_info=True, layout=layouts, device="cpu"))
        image = inputs.pop(0)
        mask = inputs.pop(0) if read.with_mask else None
        if device == "gpu":
            image = image.gpu()
            mask = mask.gpu() if mask is not None else None
        for _, kind in read.views:
            flip, anchor = inputs.pop(0), inputs.pop(0)
            view = weak_view(image, flip, anchor, size)
            view_mask = weak_view(mask, flip, anchor, size) if mask is not None else None
            if kind == "strong":
                for _ in range(n_ops):
                    op_kind, value, matrix = inputs.pop(0), inputs.pop(0), inputs.pop(0)
                    view, view_mask = apply_pool_op(view, view_mask, op_kind, value, matrix,
                                                    size, device)
            elif kind == "appearance":
                view = appearance(view, inputs, device)
            outputs.append(view)
            if view_mask is not None:
                outputs.append(view_mask)
    return tuple(outputs)
