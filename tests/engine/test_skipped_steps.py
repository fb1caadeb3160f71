"""A non-finite loss on one rank is one skipped step on every rank (the gradient all-reduce that
runs anyway carries it), logged, never a hang; too many in a row stop every rank with one line.

The NaN is real: a forward pre-hook on rank 1's network multiplies its classification images by
NaN on chosen training steps, so the loss, saliency and gradients of that rank go non-finite
exactly as an fp16 overflow would make them."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from mmdist.config import load_config

from test_schedule import TINY

THRESHOLD = ["losses.threshold=freematch", "losses.dist_align=true",
             "losses.threshold_momentum=0.5"]
RUN = ["trainer.max_steps=4", "trainer.checkpoint_every=0", "trainer.image_log_every=0",
       "trainer.log_every=1", "model.width=0.125", "engine.strategy=ddp"]


def _worker(rank: int, port: int, out_dir: str, bad_steps: list[int], limit: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from mmdist.engine.sync_points import TooManySkippedSteps
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY, [f"output_dir={out_dir}/run", *RUN,
                                         f"engine.max_skipped_in_a_row={limit}", *THRESHOLD]))
    build, forwards = trainer._build, {"n": 0}

    def poison(module, args, kwargs):
        if module.training:
            forwards["n"] += 1  # one training forward per step: step n is forward n
            if rank == 1 and forwards["n"] in bad_steps:
                kwargs["cls_images"] = kwargs["cls_images"] * float("nan")
        return args, kwargs

    def build_then_hook():
        build()
        trainer.strategy.unwrap().register_forward_pre_hook(poison, with_kwargs=True)

    trainer._build = build_then_hook
    out = {}
    try:
        summary = trainer.fit()
        out["skipped_steps"] = summary["skipped_steps"]
        out["weights"] = {k: v.clone() for k, v in trainer.strategy.unwrap().state_dict().items()}
        out["threshold"] = trainer.pseudo_labeler.state_dict()
    except TooManySkippedSteps as exc:
        out["error"] = str(exc)
    finally:
        trainer.close()
    torch.save(out, f"{out_dir}/rank{rank}.pt")


def _run(tmp_path, bad_steps, limit):
    from mmdist.engine.distributed import free_port

    mp.spawn(_worker, args=(free_port(), str(tmp_path), bad_steps, limit), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_on_one_rank_is_one_skipped_step_on_both(tmp_path):
    ranks = _run(tmp_path, [2], limit=3)
    assert [r["skipped_steps"] for r in ranks] == [1, 1]
    for name, tensor in ranks[0]["weights"].items():
        assert torch.isfinite(tensor).all(), name
        assert torch.equal(tensor, ranks[1]["weights"][name]), name  # the ranks did not drift
    # The threshold state too: summed statistics, and the skip discarded on both ranks (rank 0's
    # own loss was finite).
    assert int(ranks[0]["threshold"]["updates"]) == 3
    for name, tensor in ranks[0]["threshold"].items():
        assert torch.isfinite(tensor.float()).all(), name
        assert torch.equal(tensor, ranks[1]["threshold"][name]), name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_steps"] == 1 and summary["status"] == "completed"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_too_many_skipped_steps_in_a_row_stop_both_ranks_with_one_line(tmp_path):
    ranks = _run(tmp_path, [2, 3, 4], limit=2)
    for rank in ranks:
        assert "steps 2..3 (2 in a row) were skipped" in rank["error"], rank
        assert "\n" not in rank["error"]


def test_a_non_finite_saliency_is_a_skipped_step_that_moves_neither_weights_nor_average(tmp_path):
    """One process: the saliency channel of the decoder's input made infinite on step 2 (what
    an fp16 overflow of the inner gradient gives) is one skipped step, logged and counted."""
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY, [f"output_dir={tmp_path / 'run'}", *RUN[:-1],
                                         "engine.strategy=single", "model.ema_decay=0.5"]))
    build, calls = trainer._build, {"n": 0}

    def infinite_saliency(module, args):
        features, bridge = args
        if module.training:
            calls["n"] += 1
            if calls["n"] == 2:
                bridge = bridge.clone()
                bridge[:, 1] = float("inf")  # channel 0 is the image, 1 the saliency
        return features, bridge

    def build_then_hook():
        build()
        trainer.strategy.unwrap().decoder.register_forward_pre_hook(infinite_saliency)

    trainer._build = build_then_hook
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["steps"] == 4
    assert trainer.ema.updates == 3  # the skipped step is no update
    assert all(torch.isfinite(p).all() for p in trainer.strategy.unwrap().parameters())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("perf/skipped_steps")] == [0, 1, 1, 1]
