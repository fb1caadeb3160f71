"""The DALI intensity ops keep their full-image passes few.

DALI does not fuse arithmetic: every operator is a pass over the whole image, and on the CPU each
costs about as much as a torchvision kernel doing the whole op (the strong view made DALI 0.68x
torch in `bench augment --variant enc_ssl`). These budgets hold the pass counts the ops were
brought down to; that they still give torch's pixels is test_augment_ops' job.
"""

import re

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def

from mmdist.augment import dali_ops

SIZE = 16
SCALAR_ONLY = ("Min", "Max", "Mean", "Sum")  # reductions: their outputs are per-sample scalars

# op -> (graph piece, most image passes); the old ops took 6, 5, 6, 8 and 11.
BUDGETS = {
    "autocontrast": (lambda image: dali_ops.autocontrast(image), 4),
    "brightness": (lambda image, value: dali_ops.brightness(image, value), 3),
    "contrast": (lambda image, value: dali_ops.contrast(image, value), 4),
    "solarize": (lambda image, value: dali_ops.solarize(image, value), 3),
    "sharpness": (lambda image, value: dali_ops.sharpness(image, value, SIZE, "cpu"), 8),
}


@pipeline_def(batch_size=2, num_threads=1, device_id=None)
def _one_op(piece, with_value: bool):
    image = fn.external_source(source=lambda: np.zeros((2, SIZE, SIZE, 1), np.uint8), batch=True,
                               layout="HWC")
    if not with_value:
        return piece(image)
    value = fn.external_source(source=lambda: np.full(2, 0.5, np.float32), batch=True)
    return piece(image, value)


def image_passes(piece, tmp_path) -> int:
    """Operators of ``piece``'s graph whose output is image-sized: those fed by the image (the
    first external source) or by an image constant, except reductions."""
    pipe = _one_op(piece, piece.__code__.co_argcount == 2)
    pipe.build()
    dot = tmp_path / "graph.dot"
    pipe.save_graph_to_dot_file(str(dot))
    edges = re.findall(r"^(\S+) -> (\S+);", dot.read_text(), flags=re.M)
    sized = {"__ExternalSource_0"} | {a for a, _ in edges if "Constant" in a}
    changed = True
    while changed:
        changed = False
        for source, target in edges:
            if source in sized and target not in sized and not target.startswith("__MakeContiguous") \
                    and not any(name in target for name in SCALAR_ONLY):
                sized.add(target)
                changed = True
    return sum(1 for node in sized if "ExternalSource" not in node and "Constant" not in node)


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_intensity_op_makes_few_full_image_passes(name, tmp_path):
    piece, budget = BUDGETS[name]
    passes = image_passes(piece, tmp_path)
    assert passes <= budget, f"{name}: {passes} full-image DALI passes, budget {budget}"


def test_the_pass_count_sees_every_pass(tmp_path):
    # The counter itself: brightness written the long way (cast, multiply, clamp, floor, cast).
    from nvidia.dali import types
    import nvidia.dali.math as dmath

    def long_brightness(image, value):
        x = fn.cast(image, dtype=types.FLOAT) * value
        return fn.cast(dmath.floor(dmath.clamp(x, 0.0, 255.0)), dtype=types.UINT8)

    assert image_passes(long_brightness, tmp_path) == 5
