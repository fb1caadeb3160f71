"""Two DDP ranks draw their own random streams, and a run stopped and resumed at two ranks ends
exactly where the uninterrupted two-rank run ends (each rank restores its own states), weight
average included."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from mmdist.config import load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.model.blocks import WordDropout

from test_schedule import TINY, torchrun

RUN = ["trainer.checkpoint_every=3", "trainer.image_log_every=0", "model.dropout=0.25",
       "engine.strategy=ddp", "model.ema_decay=0.9"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_resume_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for run_dir, overrides in ((straight, ["trainer.max_steps=6"]),
                               (split, ["trainer.max_steps=3"]),
                               (split, ["trainer.max_steps=6", "trainer.resume=true"])):
        done = torchrun(2, run_dir, *RUN, *overrides)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(split, 6))
    assert len(a["rng_per_rank"]) == 2
    differences = [float((a["model"][k].double() - b["model"][k].double()).abs().max())
                   for k in a["model"]]
    print("max parameter difference after a 2-rank resume:", max(differences))
    assert max(differences) == 0.0
    assert a["scheduler"] == b["scheduler"]
    for key, state in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[name], b["optimizer"]["state"][key][name]), (key, name)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for name, tensor in a["ema"]["model"].items():
        assert torch.equal(tensor, b["ema"]["model"][name]), name
    # The two ranks' states differ, so each must get its own back.
    assert not torch.equal(a["rng_per_rank"][0]["torch"], a["rng_per_rank"][1]["torch"])


def _dropout_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY, [f"output_dir={out_dir}/run", "engine.strategy=ddp"]))
    trainer._build()
    dropout = next(m for m in trainer.model.modules() if isinstance(m, WordDropout))
    dropout.train()
    mask = dropout(torch.ones(1000)) > 0
    weights = next(iter(trainer.strategy.unwrap().parameters())).detach().clone()
    torch.save({"mask": mask, "weights": weights}, f"{out_dir}/rank{rank}.pt")
    trainer.strategy.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranks_start_from_one_model_but_draw_their_own_dropout(tmp_path):
    from mmdist.engine.distributed import free_port

    mp.spawn(_dropout_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])
    assert not torch.equal(ranks[0]["mask"], ranks[1]["mask"])
