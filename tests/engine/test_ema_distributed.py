"""The weight average on two ranks: DDP and DeepSpeed ZeRO-2 leave the same parameters on every
rank after each step, so each rank's own average is the same, with no communication, and rank 0's
checkpoint holds it (for DeepSpeed, in the step_XXXXXXXX.pt beside the ZeRO shards)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from mmdist.config import load_config
from mmdist.engine import checkpoint as ckpt

from test_schedule import TINY

STEPS = 4
RUN = [f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=2", "trainer.image_log_every=0",
       "model.width=0.125", "model.ema_decay=0.9"]


def _worker(rank: int, port: int, out_dir: str, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY, [f"output_dir={out_dir}/run", *RUN, *overrides]))
    trainer.fit()
    torch.save(trainer.ema.state_dict(), f"{out_dir}/rank{rank}.pt")
    trainer.strategy.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy", [
    ["engine.strategy=ddp"],
    ["engine.strategy=deepspeed", "engine.deepspeed_config=configs/deepspeed/zero2.json"]],
    ids=["ddp", "deepspeed_zero2"])
def test_both_ranks_keep_the_same_average_and_rank_0_saves_it(tmp_path, strategy):
    from mmdist.engine.distributed import free_port

    mp.spawn(_worker, args=(free_port(), str(tmp_path), strategy), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["updates"] == ranks[1]["updates"] == STEPS
    for name, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, ranks[1]["model"][name]), name
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", STEPS))
    assert saved["ema"]["updates"] == STEPS
    for name, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, saved["ema"]["model"][name]), name
    assert any(not torch.equal(saved["ema"]["model"][k], saved["model"][k]) for k in saved["model"])
