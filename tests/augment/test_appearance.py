"""Appearance augmentation of the segmentation streams: declared once (policy.APPEARANCE), the
same pixels from the torch and DALI backends, intensity only (masks keep the weak geometry), and
each op doing what its name says."""

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def

from augment_helpers import blob_mask, data_config, textured_image
from mmdist.augment import dali_ops
from mmdist.augment.dali_backend import DaliStepSource
from mmdist.augment.draws import AppearanceDraws, draw_appearance
from mmdist.augment.policy import APPEARANCE, APPEARANCE_INDEX, GIN_LAYERS, gaussian_kernels
from mmdist.augment.torch_backend import apply_appearance, appearance_uint8
from mmdist.augment.torch_source import TorchStepSource
from mmdist.config.variants import SEG_LABELED, SEG_UNLABELED
from mmdist.data.task_data import build_task_data

SIZE = 32


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pipeline_def
def _appearance_pipeline(feed, device: str):
    count = 1 + dali_ops.APPEARANCE_INPUTS
    layouts = ["HWC"] + [""] * (count - 2) + ["HWC"]
    inputs = list(fn.external_source(source=feed, num_outputs=count, batch=True, layout=layouts))
    image = inputs.pop(0)
    return dali_ops.appearance(image.gpu() if device == "gpu" else image, inputs, device)


def dali_appearance(images: torch.Tensor, draws: AppearanceDraws, device: str = "cpu") -> np.ndarray:
    inputs = [images.numpy().transpose(0, 2, 3, 1)] + dali_ops.appearance_arguments(draws)
    pipe = _appearance_pipeline(lambda: inputs, device, batch_size=images.shape[0], num_threads=1,
                                device_id=0 if device == "gpu" else None)
    pipe.build()
    out = pipe.run()[0]
    return (out.as_cpu() if device == "gpu" else out).as_array()[..., 0]


def textured_batch(count: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([textured_image(SIZE, seed) for seed in range(count)]))[:, None]


def only(name: str, value: float, count: int = 1) -> AppearanceDraws:
    """Draws with every op at identity but ``name`` at ``value``."""
    draws = draw_appearance(torch.Generator().manual_seed(0), count, SIZE, p=0.0)
    draws.values[:, APPEARANCE_INDEX[name]] = value
    return _rebuilt(draws)


@pytest.mark.parametrize("name", [spec.name for spec in APPEARANCE] + ["all"])
def test_torch_and_dali_make_the_same_pixels(name):
    images = textured_batch(6)
    if name == "all":
        draws = draw_appearance(torch.Generator().manual_seed(3), 6, SIZE, p=1.0)
    else:  # the op alone, at the ends of its range and inside it
        spec = APPEARANCE[APPEARANCE_INDEX[name]]
        draws = only(name, 0.0, 6)
        inside = spec.low + 0.4 * (spec.high - spec.low)
        draws.values[:, APPEARANCE_INDEX[name]] = torch.tensor([spec.low, spec.high, inside] * 2)
        draws = _rebuilt(draws)
    expected = appearance_uint8(images, draws)[:, 0].numpy()
    got = dali_appearance(images, draws)
    diff = np.abs(got.astype(int) - expected.astype(int))
    # Float sums in another order may move a value across a .5 rounding edge: one level, rarely.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (name, diff.max(), (diff > 0).mean())
    if name != "all":  # every op at these values changes the image
        assert not np.array_equal(expected[1], images[1, 0].numpy()), name


@needs_cuda
@pytest.mark.gpu
def test_dali_gpu_operators_make_the_torch_pixels():
    images = textured_batch(6)
    draws = draw_appearance(torch.Generator().manual_seed(5), 6, SIZE, p=1.0)
    expected = appearance_uint8(images, draws)[:, 0].numpy()
    diff = np.abs(dali_appearance(images, draws, "gpu").astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def _rebuilt(draws: AppearanceDraws) -> AppearanceDraws:
    """Recompute the kernels and noise of hand-set blur/noise values."""
    values = draws.values
    blur = torch.from_numpy(gaussian_kernels(values[:, APPEARANCE_INDEX["blur"]].numpy()))
    noise = torch.randn(draws.noise.shape, generator=torch.Generator().manual_seed(1))
    noise = noise * values[:, APPEARANCE_INDEX["noise"], None, None, None]
    return AppearanceDraws(values, blur, draws.gin_weights, draws.gin_bias, noise)


def test_ops_at_identity_leave_the_image_exactly_and_p_changes_no_other_draw():
    images = textured_batch(4)
    off = draw_appearance(torch.Generator().manual_seed(7), 4, SIZE, p=0.0)
    assert torch.equal(appearance_uint8(images, off), images)
    on = draw_appearance(torch.Generator().manual_seed(7), 4, SIZE, p=1.0)
    assert torch.equal(on.gin_weights, off.gin_weights) and torch.equal(on.gin_bias, off.gin_bias)
    assert not torch.equal(appearance_uint8(images, on), images)


def test_each_op_does_what_its_name_says():
    u = torch.from_numpy(textured_image(SIZE, 0)).float()[None, None] / 255
    assert apply_appearance(u, only("gamma", 1.5)).mean() < u.mean()  # darkens mid-tones
    assert apply_appearance(u, only("brightness", 1.25)).mean() > u.mean()
    assert apply_appearance(u, only("contrast", 0.75)).std() < u.std()
    blurred = apply_appearance(u, only("blur", 1.5))
    assert (blurred.diff(dim=-1).abs().mean() < 0.6 * u.diff(dim=-1).abs().mean())
    assert torch.allclose(blurred.mean(), u.mean(), atol=2e-3)  # a normalised kernel
    noisy = apply_appearance(u, only("noise", 0.05))
    assert 0.03 < (noisy - u).std() < 0.06
    gin = apply_appearance(u, only("gin", 1.0))
    x, y = 2 * u - 1, 2 * gin - 1
    # GIN keeps the image's energy (up to the [0, 1] clamp) and changes its texture.
    assert abs(float(y.norm() / x.norm()) - 1) < 0.2
    assert float(torch.corrcoef(torch.stack([u.flatten(), gin.flatten()]))[0, 1]) < 0.95


@pytest.fixture(scope="module")
def built_in_data():
    from mmdist.config import load_config
    from augment_helpers import REPO

    return build_task_data(load_config(REPO / "configs" / "tiny.yaml", ["data.image_size=32"]))


def test_segmentation_streams_get_the_same_appearance_from_both_backends(built_in_data):
    streams = (SEG_LABELED, SEG_UNLABELED, "cls_labeled")
    config = data_config(size=32, batch_size=3, seg_appearance="true", appearance_p=1.0)
    plain = data_config(size=32, batch_size=3)
    dali = DaliStepSource(built_in_data, streams, config, seed=2)
    torch_source = TorchStepSource(built_in_data, streams, config, seed=2)
    without = TorchStepSource(built_in_data, streams, plain, seed=2)
    for step, batch in enumerate(dali.iterate(0, 2)):
        reference, weak = torch_source.batch(step), without.batch(step)
        for name in (SEG_LABELED, SEG_UNLABELED):
            a, b = getattr(batch, name), getattr(reference, name)
            diff = (a.int() - b.int()).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, name
            assert not torch.equal(b, getattr(weak, name)), name  # the chain was applied
        # Intensity only: the mask is the weak view's (same geometry), the classifier's untouched.
        assert torch.equal(reference.seg_labeled_mask, weak.seg_labeled_mask)
        assert torch.equal(batch.seg_labeled_mask, weak.seg_labeled_mask)
        assert torch.equal(reference.cls_labeled, weak.cls_labeled)
