"""Checkpoints are written atomically, rotated, and bad files are named."""

import pytest
import torch

from mmdist.engine import checkpoint as ckpt


def test_save_rotate_and_find_latest(tmp_path):
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, {"model": {"w": torch.ones(2) * step}}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 6]
    latest = ckpt.find_latest_checkpoint(tmp_path)
    state = ckpt.load_checkpoint(latest)
    assert state["step"] == 6 and torch.equal(state["model"]["w"], torch.full((2,), 6.0))
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.atomic_torch_save({"x": Unpicklable()}, tmp_path / "checkpoints" / "step_00000001.pt")
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert ckpt.find_latest_checkpoint(tmp_path) is None


def test_truncated_checkpoint_is_named(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RuntimeError, match=str(path.name)):
        ckpt.load_checkpoint(path)


def test_set_aside_hides_a_checkpoint_from_resume_and_rotation(tmp_path):
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, {"model": {}}, keep=5)
    moved = ckpt.set_aside(ckpt.checkpoint_path(tmp_path, 2))
    assert moved.name == "step_00000002.pt.corrupt" and moved.is_file()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
