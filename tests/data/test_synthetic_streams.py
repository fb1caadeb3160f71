"""The built-in dataset and the step streams that feed the trainer from it."""

from pathlib import Path

import numpy as np
import torch

from mmdist.augment.step_source import build_step_source
from mmdist.config import SyntheticDomainConfig, load_config
from mmdist.data.feeding import iterate_steps
from mmdist.data.synthetic import synthetic_imageset
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def test_synthetic_images_are_deterministic_with_plausible_masks():
    a = synthetic_imageset(6, 64, seed=5, domain=SyntheticDomainConfig(), source="a")
    b = synthetic_imageset(6, 64, seed=5, domain=SyntheticDomainConfig(), source="a")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    lung_fraction = a.masks.reshape(6, -1).mean(1)
    assert ((lung_fraction > 0.1) & (lung_fraction < 0.5)).all()
    # The lungs are darker than the rest of the body.
    for image, mask in zip(a.images, a.masks):
        assert image[mask == 1].mean() < image[mask == 0].mean()
    c = synthetic_imageset(6, 64, seed=6, domain=SyntheticDomainConfig(), source="a")
    assert not np.array_equal(a.images, c.images)


def test_pneumonia_brightens_the_lungs():
    data = synthetic_imageset(40, 64, seed=1, domain=SyntheticDomainConfig(noise=0.0), source="x")
    lung_mean = np.array([img[m == 1].mean() for img, m in zip(data.images, data.masks)])
    assert 0 < data.labels.sum() < 40
    assert lung_mean[data.labels == 1].mean() > lung_mean[data.labels == 0].mean() + 5


def test_domains_shift_intensities():
    plain = synthetic_imageset(4, 64, seed=2, domain=SyntheticDomainConfig(noise=0.0), source="p")
    shifted = synthetic_imageset(4, 64, seed=2, source="s",
                                 domain=SyntheticDomainConfig(gamma=1.5, contrast=0.8, noise=0.0))
    np.testing.assert_array_equal(plain.masks, shifted.masks)
    assert shifted.images.astype(float).mean() < plain.images.astype(float).mean() - 5


def test_step_batches_have_the_variant_streams_and_shapes():
    config = load_config(TINY)
    spec = VARIANTS["multimix"]
    data = build_task_data(config, spec.tasks)
    source = build_step_source(config, data, spec.streams)
    raw = source.batch(0)
    batch = raw.as_model_input()
    b, s = config.data.batch_size, config.data.image_size
    for name in spec.streams:
        assert getattr(raw, name).dtype == torch.uint8  # a quarter of float32's bytes to move
        tensor = getattr(batch, name)
        assert tensor.shape == (b, 1, s, s) and tensor.dtype == torch.float32
        assert tensor.min() >= -1 and tensor.max() <= 1
    assert raw.seg_labeled_mask.dtype == torch.uint8
    assert batch.seg_labeled_mask.dtype == torch.float32
    assert set(batch.seg_labeled_mask.unique().tolist()) <= {0.0, 1.0}
    assert batch.cls_labeled_target.dtype == torch.int64
    assert batch.image_count == 5 * b
    # Labeled images come from the labeled split only.
    labeled = set(data.classification.split.labeled.tolist())
    assert set(source.samplers["cls_labeled"].indices(0).tolist()) <= labeled
    # Weak and strong views are of the same images but differ.
    assert not torch.equal(batch.cls_unlabeled_weak, batch.cls_unlabeled_strong)


def test_batches_are_a_pure_function_of_the_step_and_workers_change_nothing():
    config = load_config(TINY)
    spec = VARIANTS["multimix"]
    data = build_task_data(config, spec.tasks)
    source = build_step_source(config, data, spec.streams)
    inline = list(iterate_steps(source, 3, 6, workers=0))
    threaded = list(iterate_steps(source, 3, 6, workers=2))
    again = build_step_source(config, data, spec.streams).batch(4)
    for x, y in zip(inline, threaded):
        for name in spec.streams:
            assert torch.equal(getattr(x, name), getattr(y, name))
    assert torch.equal(inline[1].seg_labeled, again.seg_labeled)
    assert not torch.equal(inline[0].seg_labeled, inline[1].seg_labeled)
