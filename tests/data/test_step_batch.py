"""A step's batch on its way to the model: uint8 images and masks become exactly the host's model
input on the device they are on (a table of the 256 levels on CUDA), and floats pass through."""

from __future__ import annotations

import pytest
import torch

from mmdist.data.step_batch import StepBatch, model_input_table, to_model_input

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def every_level_batch() -> StepBatch:
    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    return StepBatch(seg_labeled=levels, seg_labeled_mask=(levels % 2).to(torch.uint8),
                     cls_labeled=levels.flip(0), cls_labeled_target=torch.tensor([0, 1, 1, 0]))


def check_model_input(device):
    raw = every_level_batch()
    batch = raw.to(device, non_blocking=True).as_model_input()
    assert batch.seg_labeled.device.type == torch.device(device).type
    # Exactly the values the host made before batches travelled as uint8, every level of them.
    assert torch.equal(batch.seg_labeled.cpu(), to_model_input(raw.seg_labeled))
    assert torch.equal(batch.cls_labeled.cpu(), to_model_input(raw.cls_labeled))
    assert batch.seg_labeled_mask.dtype == torch.float32
    assert torch.equal(batch.seg_labeled_mask.cpu(), raw.seg_labeled_mask.float())
    assert torch.equal(batch.cls_labeled_target.cpu(), raw.cls_labeled_target)


def test_uint8_batches_become_exactly_the_host_model_input_and_floats_pass_through():
    check_model_input("cpu")
    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    # The table a CUDA device reads its model input from holds the host's values.
    assert torch.equal(model_input_table(torch.device("cpu"))[levels.int()], to_model_input(levels))
    floats = StepBatch(seg_labeled=torch.rand(2, 1, 8, 8) * 2 - 1,
                       seg_labeled_mask=(torch.rand(2, 1, 8, 8) > 0.5).float())
    again = floats.as_model_input()
    assert again.seg_labeled is floats.seg_labeled  # already model input: untouched
    assert again.seg_labeled_mask is floats.seg_labeled_mask


@pytest.mark.gpu
@needs_cuda
def test_uint8_batches_become_exactly_the_host_model_input_on_cuda():
    # CUDA divides by a scalar as a multiplication by its reciprocal: 111 of the 256 levels would
    # differ in the last bit if the host's formula ran there.
    check_model_input("cuda")
