"""The op pool in both backends: same result on fixed images and parameters, weak views that are
exactly a flip and a reflect crop, masks that follow every geometric op, no colour op in DALI."""

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def

from augment_helpers import blob_mask, data_config, textured_image
from mmdist.augment import dali_ops
from mmdist.augment.draws import WeakDraws, draw_weak
from mmdist.augment.policy import POOL, POOL_BY_NAME
from mmdist.augment.torch_backend import apply_op, weak_views

SIZE = 32
GEOMETRIC = [op.name for op in POOL if op.geometric]
CASES = [(op.name, magnitude, sign) for op in POOL for magnitude in (1, 4, 10) for sign in (1, -1)
         if sign == 1 or op.signed]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
POOL_INDEX = {op.name: i for i, op in enumerate(POOL)}


def op_inputs(cases):
    """DALI's (kind, value, matrix) inputs of (name, magnitude, sign) cases, all applied."""
    names, magnitudes, signs = zip(*cases)
    return dali_ops.op_arguments(np.array([POOL_INDEX[n] for n in names]), np.array(magnitudes),
                                 np.array(signs), np.ones(len(cases), dtype=bool), SIZE)


def weak_draws(flips, tops, lefts, pad=4) -> WeakDraws:
    return WeakDraws(flip=torch.tensor(flips), top=torch.tensor(tops), left=torch.tensor(lefts),
                     pad=pad)


@pipeline_def(enable_conditionals=True)
def _op_pipeline(feed, with_mask: bool, device: str):
    image, mask, kind, value, matrix = fn.external_source(
        source=feed, num_outputs=5, batch=True, layout=["HWC", "HWC", "", "", ""])
    if device == "gpu":
        image, mask = image.gpu(), mask.gpu()
    out, out_mask = dali_ops.apply_pool_op(image, mask if with_mask else None, kind, value, matrix,
                                           SIZE, device)
    return (out, out_mask) if with_mask else (out,)


def dali_apply(images, masks, cases, device="cpu"):
    """Run each (name, magnitude, sign) of ``cases`` on the matching image (and mask) with DALI.
    images, masks: (B, S, S) uint8. Returns numpy (B, S, S) image (and mask) outputs."""
    inputs = [images[..., None], masks[..., None], *op_inputs(cases)]
    pipe = _op_pipeline(lambda: inputs, True, device, batch_size=len(cases), num_threads=1,
                        device_id=0 if device == "gpu" else None)
    pipe.build()
    outputs = pipe.run()
    arrays = [(o.as_cpu() if device == "gpu" else o).as_array()[..., 0] for o in outputs]
    return arrays[0], arrays[1]


def torch_apply(images, masks, cases):
    out_images, out_masks = [], []
    for image, mask, (name, magnitude, sign) in zip(images, masks, cases):
        a, b = apply_op(torch.from_numpy(image)[None], torch.from_numpy(mask)[None], name,
                        magnitude, sign)
        out_images.append(a[0].numpy())
        out_masks.append(b[0].numpy())
    return np.stack(out_images), np.stack(out_masks)


def test_every_pool_op_has_a_dali_implementation():
    assert {dali_ops.kind_of(op.name) for op in POOL} <= set(dali_ops.KINDS)
    assert len(POOL) == 13 and "identity" in POOL_BY_NAME


def nearest_candidates(source: np.ndarray, matrix: list[list[float]]) -> list[np.ndarray]:
    """The oracle of a nearest-neighbour warp: for each output pixel, the source values at the
    nearest position of its exact (float64) source coordinate, both of them on a tie (.5), 0
    outside the image. Returns up to four (S, S) candidate images."""
    m = np.asarray(matrix, dtype=np.float64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    sx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - 0.5  # in index units
    sy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - 0.5
    out = []
    for fx in (np.floor, np.ceil):
        for fy in (np.floor, np.ceil):
            tie_x, tie_y = np.abs(sx % 1 - 0.5) < 1e-3, np.abs(sy % 1 - 0.5) < 1e-3
            cx = np.where(tie_x, fx(sx), np.round(sx)).astype(int)
            cy = np.where(tie_y, fy(sy), np.round(sy)).astype(int)
            inside = (cx >= 0) & (cx < SIZE) & (cy >= 0) & (cy < SIZE)
            out.append(np.where(inside, source[cy.clip(0, SIZE - 1), cx.clip(0, SIZE - 1)], 0))
    return out


def is_a_nearest_warp(output: np.ndarray, source: np.ndarray, matrix) -> bool:
    candidates = nearest_candidates(source, matrix)
    return bool(np.logical_or.reduce([output == c for c in candidates]).all())


def check_parity(device, intensity_levels, geometric_fraction):
    images = np.stack([textured_image(SIZE, seed=i) for i in range(len(CASES))])
    masks = np.stack([blob_mask(SIZE, seed=i) for i in range(len(CASES))])
    dali_images, dali_masks = dali_apply(images, masks, CASES, device)
    torch_images, torch_masks = torch_apply(images, masks, CASES)
    for i, (name, magnitude, sign) in enumerate(CASES):
        diff = np.abs(dali_images[i].astype(int) - torch_images[i].astype(int))
        where = f"{name} magnitude {magnitude} sign {sign}"
        if POOL_BY_NAME[name].geometric:
            # Nearest-neighbour sampling may round an exact tie (x.5) either way (a shear by 0.12
            # ties on whole rows): a few pixels may differ, but each backend must pick a nearest
            # source pixel of the transform.
            assert np.mean(diff > 0) <= geometric_fraction, where
            assert np.mean(dali_masks[i] != torch_masks[i]) <= geometric_fraction, where
            matrix = op_inputs([(name, magnitude, sign)])[2][0]
            assert is_a_nearest_warp(dali_images[i], images[i], matrix), where
            assert is_a_nearest_warp(torch_images[i], images[i], matrix), where
        else:
            assert diff.max() <= intensity_levels, where
            assert np.array_equal(dali_masks[i], masks[i]), f"{where} changed the mask"
    changed = [not np.array_equal(torch_images[i], images[i]) for i, (name, _, _) in enumerate(CASES)
               if name != "identity"]
    assert np.mean(changed) > 0.8  # the ops really act (a few are no-ops at some magnitudes)


def test_each_pool_op_gives_the_same_result_in_both_backends_on_cpu():
    # Measured here: intensity ops agree exactly; geometric ones but for rounding ties.
    check_parity("cpu", intensity_levels=0, geometric_fraction=0.05)


@pytest.mark.gpu
@needs_cuda
def test_each_pool_op_gives_the_same_result_in_both_backends_on_gpu():
    check_parity("gpu", intensity_levels=1, geometric_fraction=0.05)


@pipeline_def
def _weak_pipeline(feed, device: str):
    image, mask, flip, anchor = fn.external_source(source=feed, num_outputs=4, batch=True,
                                                   layout=["HWC", "HWC", "", ""])
    if device == "gpu":
        image, mask = image.gpu(), mask.gpu()
    return (dali_ops.weak_view(image, flip, anchor, SIZE),
            dali_ops.weak_view(mask, flip, anchor, SIZE))


def dali_weak(images, masks, draws: WeakDraws, device="cpu"):
    inputs = [images[..., None], masks[..., None], *dali_ops.weak_arguments(draws)]
    pipe = _weak_pipeline(lambda: inputs, device, batch_size=len(draws.flip), num_threads=1,
                          device_id=0 if device == "gpu" else None)
    pipe.build()
    return [(o.as_cpu() if device == "gpu" else o).as_array()[..., 0] for o in pipe.run()]


def find_flip_and_crop(source: np.ndarray, view: np.ndarray, pad: int) -> list[tuple[bool, int, int]]:
    """Every (flip, top, left) with view == crop of the reflect-padded (flipped) source."""
    found = []
    for flip in (False, True):
        padded = np.pad(source[:, ::-1] if flip else source, pad, mode="reflect")
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                if np.array_equal(padded[top:top + SIZE, left:left + SIZE], view):
                    found.append((flip, top, left))
    return found


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_cuda])])
def test_weak_view_is_exactly_a_flip_and_a_reflect_crop_in_both_backends(device):
    drawn = draw_weak(torch.Generator().manual_seed(3), 12, SIZE, data_config(size=SIZE).augment)
    assert drawn.pad == 4
    extremes = weak_draws([True, False, True, False], [0, 8, 8, 0], [0, 8, 0, 8])
    draws = WeakDraws(*(torch.cat([getattr(drawn, k), getattr(extremes, k)])
                        for k in ("flip", "top", "left")), pad=4)
    count = len(draws.flip)
    images = np.stack([textured_image(SIZE, seed=10 + i) for i in range(count)])
    masks = np.stack([blob_mask(SIZE, seed=i) for i in range(count)])
    dali_views, dali_masks = dali_weak(images, masks, draws, device)
    torch_views, torch_masks = weak_views(torch.from_numpy(images)[:, None],
                                          torch.from_numpy(masks)[:, None], draws)
    for i in range(count):
        assert np.array_equal(dali_views[i], torch_views[i, 0].numpy())
        assert np.array_equal(dali_masks[i], torch_masks[i, 0].numpy())
        # The oracle: search every flip and offset; the drawn ones (only them) reproduce the view.
        drawn_i = (bool(draws.flip[i]), int(draws.top[i]), int(draws.left[i]))
        assert find_flip_and_crop(images[i], dali_views[i], 4) == [drawn_i]
        assert find_flip_and_crop(masks[i], dali_masks[i], 4).count(drawn_i) == 1


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_image_and_mask_stay_aligned_under_every_geometric_op(backend):
    cases = [(name, magnitude, sign) for name in GEOMETRIC for magnitude in (4, 7, 10)
             for sign in (1, -1)]
    masks = np.stack([blob_mask(SIZE, seed=i) for i in range(len(cases))])
    images = (masks * 200 + 20).astype(np.uint8)  # the image is drawn from its mask: 20 / 220
    if backend == "dali":
        out_images, out_masks = dali_apply(images, masks, cases)
    else:
        out_images, out_masks = torch_apply(images, masks, cases)
    for i, case in enumerate(cases):
        assert set(np.unique(out_images[i])) <= {0, 20, 220}, case  # nearest: no new values
        assert np.array_equal(out_images[i] == 220, out_masks[i] == 1), case
        assert not np.array_equal(out_masks[i], masks[i]), f"{case} did not move the mask"
    weak = weak_draws([True, False], [1, 8], [7, 0])
    if backend == "dali":
        views, view_masks = dali_weak(images[:2], masks[:2], weak)
    else:
        views, view_masks = weak_views(torch.from_numpy(images[:2])[:, None],
                                       torch.from_numpy(masks[:2])[:, None], weak)
        views, view_masks = views[:, 0].numpy(), view_masks[:, 0].numpy()
    assert np.array_equal(views, (view_masks * 200 + 20).astype(np.uint8))


def test_no_colour_operator_reaches_the_grayscale_step_pipeline():
    """DALI's colour ops kill the process on 1-channel images: none may be in the graph."""
    from mmdist.augment.dali_backend import plan_reads
    from mmdist.augment.dali_pipeline import step_pipeline
    from mmdist.model import VARIANTS

    streams = VARIANTS["multimix"].streams + ("cls_unlabeled_weak2",)
    pipe = step_pipeline(plan_reads(streams), [lambda info: None] * 4, SIZE, 2, "cpu",
                         batch_size=2, num_threads=1, device_id=None)
    graph = pipe.serialize()
    for colour in (b"Hue", b"Saturation", b"ColorTwist", b"Hsv", b"ColorSpaceConversion",
                   b"RandAugment", b"AutoAugment"):
        assert colour not in graph, colour
    for expected in (b"WarpAffine", b"Equalize", b"Slice", b"Flip"):
        assert expected in graph, expected  # the search itself works
