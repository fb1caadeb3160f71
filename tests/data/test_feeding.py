"""Feeding the trainer: a prefetching thread that yields exactly the inline batches and never
outlives the loop, uint8 batches pinned only for a CUDA device. (Their conversion to model input:
test_step_batch.py; one permutation per stream epoch: test_sampler.py.)"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import pytest
import torch

from mmdist.augment.step_source import build_step_source
from mmdist.augment.torch_source import TorchStepSource
from mmdist.config import load_config
from mmdist.data.feeding import default_prefetch, iterate_steps
from mmdist.data.step_batch import StepBatch
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
STREAMS = VARIANTS["multimix"].streams
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny():
    config = load_config(TINY)
    return config, build_task_data(config, VARIANTS["multimix"].tasks)


def torch_source(tiny, cls=TorchStepSource):
    config, data = tiny
    return cls(data, STREAMS, config.data, config.seed)


def assert_same(a: StepBatch, b: StepBatch):
    for name, x in vars(a).items():
        y = getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


def test_prefetching_yields_exactly_the_inline_batches_in_order(tiny):
    source = torch_source(tiny)
    inline = list(iterate_steps(source, 17, 24, prefetch=0))  # crosses an epoch (21 steps)
    ahead = list(iterate_steps(source, 17, 24, prefetch=2))
    assert len(inline) == len(ahead) == 7
    for a, b in zip(inline, ahead):
        assert_same(a, b)
    assert not torch.equal(inline[0].seg_labeled, inline[1].seg_labeled)


class RecordingSource(TorchStepSource):
    """A real step source that notes which thread built which step, and fails at ``fail_at``."""

    fail_at = None

    def batch(self, step: int) -> StepBatch:
        if step == self.fail_at:
            raise_from_the_source(step)
        out = super().batch(step)
        self.built.append((step, threading.current_thread().name))
        return out


def raise_from_the_source(step: int):
    raise ValueError(f"unreadable image at step {step}")


def recording_source(tiny, fail_at=None) -> RecordingSource:
    source = torch_source(tiny, RecordingSource)
    source.built, source.fail_at = [], fail_at
    return source


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mmdist-batches"]


def test_the_next_batch_is_built_in_the_background_while_the_current_one_is_used(tiny):
    source = recording_source(tiny)
    batches = iterate_steps(source, 0, 50, prefetch=2)
    next(batches)
    deadline = time.monotonic() + 30
    while len(source.built) < 3 and time.monotonic() < deadline:  # the consumer "trains" here
        time.sleep(0.01)
    time.sleep(0.3)
    steps = [step for step, _ in source.built]
    # Ahead of the consumer, in order, and bounded: the queue's two and the one it waits to put.
    assert steps == list(range(len(steps))) and 3 <= len(steps) <= 4
    assert {name for _, name in source.built} == {"mmdist-batches"}
    assert next(batches).seg_labeled is not None
    batches.close()
    assert not prefetch_threads()


def test_the_thread_runs_by_default_for_a_cuda_device_and_not_for_a_cpu(tiny):
    # On a CPU it would take cores from torch's threads (measured: 228 -> 180 images/s).
    assert default_prefetch("cuda") == default_prefetch(torch.device("cuda", 1)) == 2
    assert default_prefetch("cpu") == 0
    source = recording_source(tiny)
    assert len(list(iterate_steps(source, 0, 2, device="cpu"))) == 2
    assert {name for _, name in source.built} == {threading.current_thread().name}


def test_an_error_in_the_source_reaches_the_training_thread_with_its_traceback(tiny):
    source = recording_source(tiny, fail_at=2)
    seen = []
    with pytest.raises(ValueError, match="unreadable image at step 2") as caught:
        for batch in iterate_steps(source, 0, 5, prefetch=2):
            seen.append(batch)
    assert len(seen) == 2
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "raise_from_the_source" in frames and "batch" in frames
    assert not prefetch_threads()


def test_stopping_early_leaves_no_thread_running(tiny):
    source = recording_source(tiny)
    for step, _ in enumerate(iterate_steps(source, 0, 50, prefetch=1)):
        if step == 1:
            time.sleep(0.5)  # the thread fills its queue and blocks on it
            break  # as the trainer does on a stop signal
    assert not prefetch_threads()
    assert len(source.built) < 6  # bounded: it never ran far ahead
    batches = iterate_steps(source, 0, 50, prefetch=2)
    next(batches)
    assert prefetch_threads()
    batches.close()
    assert not prefetch_threads()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
@pytest.mark.parametrize("backend,workers", [("torch", 0), ("torch", 2), ("dali", 0)])
def test_batches_are_uint8_and_pinned_only_for_a_cuda_device(tiny, backend, workers, device):
    config = load_config(TINY, [f"data.augment.backend={backend}", "data.augment.threads=1"])
    source = build_step_source(config, tiny[1], STREAMS)
    for batch in iterate_steps(source, 0, 2, workers, device=device):
        for name in STREAMS:  # on a CPU, pinning would only cost a copy
            tensor = getattr(batch, name)
            assert tensor.dtype == torch.uint8 and tensor.is_pinned() == (device == "cuda"), name
        moved = batch.to(device, non_blocking=True).as_model_input()
        assert moved.seg_labeled.device.type == device and moved.seg_labeled.dtype == torch.float32
