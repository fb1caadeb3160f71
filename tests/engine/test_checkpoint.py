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
    assert "torch" in state["rng"]
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


def test_rng_state_round_trip():
    torch.manual_seed(3)
    state = ckpt.rng_state()
    first = torch.rand(3)
    ckpt.restore_rng_state(state)
    assert torch.equal(first, torch.rand(3))
