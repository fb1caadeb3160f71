"""The DALI step source against the torch one: same StepBatch, rank shards, reproducibility."""

from dataclasses import fields

import numpy as np
import pytest
import torch

from augment_helpers import assert_batches_equal, data_config, index_task_data
from mmdist.augment.dali_backend import DaliStepSource
from mmdist.augment.torch_source import TorchStepSource
from mmdist.config.variants import CLS_STRONG, CLS_WEAK, CLS_WEAK2
from mmdist.data.sampler import STREAM_IDS, ShardedStream
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ALL_STREAMS = VARIANTS["multimix"].streams + (CLS_WEAK2,)
CLS_STREAMS = ("cls_labeled", CLS_WEAK, CLS_STRONG)


@pytest.fixture(scope="module")
def built_in_data():
    from mmdist.config import load_config
    from augment_helpers import REPO

    config = load_config(REPO / "configs" / "tiny.yaml", ["data.image_size=32"])
    return build_task_data(config)


def compare_to_torch(dali_batch, torch_batch) -> list[bool]:
    """Fields, dtypes, shapes equal; values equal but for nearest-neighbour ties in strong views
    (a tie moves a row or a column by one pixel). Returns which strong views are identical."""
    identical = []
    for f in fields(torch_batch):
        a, b = getattr(dali_batch, f.name), getattr(torch_batch, f.name)
        assert (a is None) == (b is None), f.name
        if a is None:
            continue
        assert a.dtype == b.dtype and a.shape == b.shape and a.device.type == "cpu", f.name
        if f.name == CLS_STRONG:
            for x, y in zip(a, b):
                identical.append(torch.equal(x, y))
                levels = (x.int() - y.int()).abs().float()
                assert (x != y).float().mean() < 0.1 and levels.mean() < 2.55
        else:
            assert torch.equal(a, b), f.name
    return identical


@pytest.mark.parametrize("ops,apply", [(2, "always"), (3, "half")])
def test_dali_batches_are_the_torch_backend_batches(built_in_data, ops, apply):
    config = data_config(size=32, batch_size=3, strong_ops=ops, strong_apply=apply)
    dali = DaliStepSource(built_in_data, ALL_STREAMS, config, seed=5)
    reference = TorchStepSource(built_in_data, ALL_STREAMS, config, seed=5)
    batches = list(dali.iterate(0, 4))
    assert len(batches) == 4
    identical = []
    for step, batch in enumerate(batches):
        identical += compare_to_torch(batch, reference.batch(step))
        assert batch.seg_labeled.dtype == batch.seg_labeled_mask.dtype == torch.uint8
        assert set(batch.seg_labeled_mask.unique().tolist()) <= {0, 1}
        assert batch.image_count == 6 * 3
    assert np.mean(identical) >= 0.75  # measured: 12 of 12 (nearest-neighbour ties may differ)
    # The views of the unlabeled images are different augmentations of the same images.
    assert not torch.equal(batches[0].cls_unlabeled_weak, batches[0].cls_unlabeled_weak2)


def test_a_step_is_a_pure_function_of_the_step(built_in_data):
    """What resuming at step k relies on: iterate(k, ...) yields what batch(k) gives."""
    config = data_config(size=32, batch_size=2)
    source = DaliStepSource(built_in_data, ALL_STREAMS, config, seed=1)
    resumed = list(source.iterate(3, 5))
    assert_batches_equal(resumed[0], source.batch(3))
    assert_batches_equal(resumed[1], source.batch(4))
    assert not torch.equal(resumed[0].cls_unlabeled_strong, resumed[1].cls_unlabeled_strong)


def image_ids(views: torch.Tensor) -> list[int]:
    """Index of each view of an index_task_data image (constant i + 1)."""
    values = views.to(torch.int64)
    assert (values == values[:, :, :1, :1]).all()  # flips and crops keep a constant image constant
    return (values[:, 0, 0, 0] - 1).tolist()


def test_two_ranks_see_disjoint_samples_that_cover_the_epoch():
    count, labeled, batch_size = 57, 8, 4  # 49 unlabeled: 24 per rank, one left over
    data = index_task_data(count, labeled, size=32)
    config = data_config(size=32, batch_size=batch_size)
    seen = {}
    for rank in (0, 1):
        source = DaliStepSource(data, CLS_STREAMS, config, seed=3, rank=rank, world_size=2)
        steps = source.samplers[CLS_WEAK].steps_per_pass
        assert steps == 24 // batch_size
        batches = list(source.iterate(0, 2 * steps))
        ids = [image_ids(b.cls_unlabeled_weak) for b in batches]
        seen[rank] = [sum(ids[:steps], []), sum(ids[steps:], [])]  # epochs 0 and 1
        for batch in batches:  # labeled views carry their own image's target
            labeled_ids = image_ids(batch.cls_labeled)
            assert set(labeled_ids) <= set(range(labeled))
            assert batch.cls_labeled_target.tolist() == [i % 2 for i in labeled_ids]
        pool = np.arange(labeled, count)
        for epoch in (0, 1):
            expected = ShardedStream(pool, batch_size, 3, STREAM_IDS[CLS_WEAK], rank, 2).epoch_shard(epoch)
            assert seen[rank][epoch] == expected.tolist()
    for epoch in (0, 1):
        a, b = set(seen[0][epoch]), set(seen[1][epoch])
        assert len(a) == len(b) == 24 and not a & b
        assert len(a | b) == 48 and (a | b) <= set(range(labeled, count))
    assert seen[0][0] != seen[0][1]  # reshuffled per epoch


def run_epoch(data, seed, rank, world_size=2):
    config = data_config(size=32, batch_size=4)
    source = DaliStepSource(data, VARIANTS["multimix"].streams, config, seed=seed, rank=rank,
                            world_size=world_size)
    return list(source.iterate(0, source.samplers[CLS_WEAK].steps_per_pass))


def test_a_fixed_seed_reproduces_an_epoch_bit_for_bit_and_seeds_and_ranks_differ(built_in_data):
    first = run_epoch(built_in_data, seed=11, rank=0)
    again = run_epoch(built_in_data, seed=11, rank=0)
    assert len(first) == len(again) >= 2
    for a, b in zip(first, again):
        assert_batches_equal(a, b)
    other_seed = run_epoch(built_in_data, seed=12, rank=0)
    other_rank = run_epoch(built_in_data, seed=11, rank=1)
    for other in (other_seed, other_rank):
        assert not torch.equal(first[0].cls_unlabeled_strong, other[0].cls_unlabeled_strong)
        assert not torch.equal(first[0].seg_labeled, other[0].seg_labeled)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_gpu_device_without_a_gpu_is_a_clear_error(built_in_data):
    config = data_config(size=32, device="gpu")
    with pytest.raises(ValueError, match="data.augment.device"):
        DaliStepSource(built_in_data, ALL_STREAMS, config, seed=0)


@pytest.mark.gpu
@needs_cuda
def test_gpu_pipeline_gives_the_cpu_pipeline_batches_on_the_gpu(built_in_data):
    cpu = DaliStepSource(built_in_data, ALL_STREAMS, data_config(size=32, batch_size=3), seed=2)
    gpu = DaliStepSource(built_in_data, ALL_STREAMS, data_config(size=32, batch_size=3, device="gpu"),
                         seed=2)
    # All steps first, compared after: a copy that DALI's next step had overwritten would show.
    gpu_batches = list(gpu.iterate(0, 5))
    for a, b in zip(cpu.iterate(0, 5), gpu_batches, strict=True):
        # uint8 views on the GPU become there exactly the model input the CPU ones become.
        assert torch.equal(b.as_model_input().seg_labeled.cpu(), a.as_model_input().seg_labeled)
        for f in fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if x is None:
                assert y is None
                continue
            if f.name != "cls_labeled_target":
                assert y.device.type == "cuda", f.name
            y = y.cpu()
            if f.name == CLS_STRONG:  # float rounding on the GPU: ties and 1-level differences
                assert ((x.int() - y.int()).abs() > 1).float().mean() < 0.02
            else:
                assert torch.equal(x, y), f.name


@pytest.mark.parametrize("override,key", [("data.augment.threads=0", "data.augment.threads"),
                                          ("data.augment.backend=opencv", "backend"),
                                          ("data.augment.device=tpu", "device")])
def test_bad_augment_settings_name_their_key(override, key):
    from mmdist.config import ConfigError, load_config
    from augment_helpers import REPO

    with pytest.raises(ConfigError, match=key):
        load_config(REPO / "configs" / "tiny.yaml", [override])
