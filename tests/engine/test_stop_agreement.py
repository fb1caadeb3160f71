"""Host syncs off the per-step path: a stop signal to one rank stops every rank on the same
check step, and a non-finite loss is caught before any checkpoint holds its weights."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from mmdist.config import load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.sync_points import FiniteLossWatch, TooManySkippedSteps
from mmdist.engine.trainer import Trainer

from test_distributed_failure import two_ranks, wait_for_checkpoint
from test_schedule import TINY


def test_a_non_finite_loss_is_remembered_without_a_sync_and_named_at_the_check():
    watch = FiniteLossWatch(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        watch.add(torch.tensor(value), step)
    with pytest.raises(FloatingPointError, match="the loss of step 2 was not finite"):
        watch.check(5)


def test_a_run_whose_loss_goes_nan_never_checkpoints_it(tmp_path):
    # The weights blow up within a step or two; every later step is skipped (non-finite loss)
    # until engine.max_skipped_in_a_row stops the run.
    config = load_config(TINY, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=6",
                                "trainer.checkpoint_every=2", "trainer.log_every=0",
                                "optim.lr=1e30", "engine.max_skipped_in_a_row=2"])
    with pytest.raises(TooManySkippedSteps, match=r"\(2 in a row\) were skipped"):
        Trainer(config).fit()
    for _, path in ckpt.list_checkpoints(tmp_path / "run"):
        state = ckpt.load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in state["model"].values()), path


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_signal_to_one_rank_stops_both_on_the_same_check_step(tmp_path):
    run_dir = tmp_path / "run"
    with two_ranks(run_dir, tmp_path, "trainer.stop_check_every=7",
                   "trainer.log_every=1") as (ranks, logs):
        wait_for_checkpoint(run_dir, 2, ranks, logs[0])
        ranks[1].send_signal(signal.SIGUSR2)  # rank 1 only
        codes = [p.wait(timeout=200) for p in ranks]
    assert codes == [3, 3], [log.read_text()[-2000:] for log in logs]
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["status"] == "preempted" and stopped % 7 == 0 and 2 < stopped < 200
    assert ckpt.checkpoint_path(run_dir, stopped).is_file()
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, stopped))
    assert state["step"] == stopped and len(state["rng_per_rank"]) == 2


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_preempted_two_rank_ddp_run_exits_3_on_both_ranks(tmp_path):
    """SLURM preemption sends SIGTERM to every task: both ranks checkpoint and exit 3 (the
    status slurm/train.sh requeues on), with no abort at teardown (wrapper, then group)."""
    run_dir = tmp_path / "run"
    with two_ranks(run_dir, tmp_path, "trainer.stop_check_every=1") as (ranks, logs):
        wait_for_checkpoint(run_dir, 2, ranks, logs[0])
        for process in ranks:
            process.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=200) for p in ranks]
    texts = [log.read_text() for log in logs]
    assert codes == [3, 3], [text[-2000:] for text in texts]
    for text in texts:
        assert "terminate called" not in text and "Aborted" not in text, text[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted"
    assert ckpt.checkpoint_path(run_dir, summary["steps"]).is_file()
