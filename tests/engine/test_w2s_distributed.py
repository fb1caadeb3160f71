"""Weak-to-strong consistency and the threshold schedule on two gloo ranks: the threshold state is
the same on both ranks, bit for bit, and the one-process state of the global batch (its statistics
are summed over ranks with the strategy's all-reduce; without it each rank keeps its own),
and the w2s step gives DeepSpeed the gradients DDP gets (the step is the same on every strategy),
with every parameter reached under DDP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from test_ddp_gradients import fresh_model, free_port, global_batch, relative_error, shard

from mmdist.config import EngineConfig, LossConfig
from mmdist.engine.distributed import RankInfo
from mmdist.engine.step import training_losses
from mmdist.engine.trainer import find_unused_parameters
from mmdist.losses import PseudoLabeler
from mmdist.model import VARIANTS

REPO = Path(__file__).resolve().parents[2]
LOSSES = LossConfig(tau=0.0, seg_unlabeled="w2s", w2s_feature_dropout=0.5, w2s_threshold=0.6,
                    w2s_cutmix_p=1.0, threshold="freematch", dist_align=True,
                    threshold_momentum=0.5)
LOGITS = torch.tensor([[2.0, 0.1], [0.3, 0.2], [-1.0, 1.5], [0.0, 0.4]])
TARGETS = torch.tensor([1, 0, 1, 1])


SCHEDULES = {"freematch": {"threshold": "freematch", "dist_align": True},
             "softmatch": {"threshold": "softmatch", "dist_align": False}}


def _labeler_steps(labeler: PseudoLabeler, logits, targets) -> list[torch.Tensor]:
    weights = []
    for scale in (1.0, 2.0, 0.5):
        weights.append(labeler(logits * scale, targets)[1])
        labeler.commit()
    return weights


def _w2s_step(strategy, rank: int, world: int) -> dict:
    model = fresh_model("detached", torch.float32)
    wrapped = strategy.setup(model, torch.optim.SGD(model.parameters(), lr=0.1),
                             find_unused_parameters(strategy.config, VARIANTS["multimix"]))
    batch = shard(global_batch(world, torch.float32), rank)
    torch.manual_seed(100 + rank)  # the same w2s draws for every strategy on this rank
    labeler = PseudoLabeler("freematch", momentum=0.5, dist_align=True,
                            reduce_sum=strategy.all_reduce_sum)
    loss, terms = training_losses(wrapped, batch, VARIANTS["multimix"], LOSSES, 1, labeler)
    strategy.backward(loss)
    labeler.commit()
    return {"grads": strategy.gradients(), "terms": terms, "state": labeler.state_dict()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ["DS_ACCELERATOR"] = "cpu"
    from mmdist.engine.ddp import DDPStrategy
    from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy

    info = RankInfo(rank, world, rank, "127.0.0.1", port, "test")
    ddp = DDPStrategy(EngineConfig(strategy="ddp", device="cpu"), info=info)
    rows = slice(rank * 2, rank * 2 + 2)
    results = {"ddp": _w2s_step(ddp, rank, world), "find_unused": ddp.find_unused}
    for name, kwargs in SCHEDULES.items():
        labeler = PseudoLabeler(momentum=0.5, reduce_sum=ddp.all_reduce_sum, **kwargs)
        results[name] = {"weights": _labeler_steps(labeler, LOGITS[rows], TARGETS[rows]),
                         "state": labeler.state_dict()}
        local = PseudoLabeler(momentum=0.5, **kwargs)  # this rank's batch only
        _labeler_steps(local, LOGITS[rows], TARGETS[rows])
        results[name]["local"] = local.state_dict()
    config = EngineConfig(strategy="deepspeed", device="cpu",
                          deepspeed_config=str(REPO / "configs/deepspeed/zero1.json"))
    results["zero1"] = _w2s_step(DeepSpeedStrategy(config, info=info), rank, world)
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    ddp.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_threshold_state_is_global_and_w2s_steps_agree_across_strategies(tmp_path: Path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for schedule, kwargs in SCHEDULES.items():
        one = PseudoLabeler(momentum=0.5, **kwargs)
        weights = _labeler_steps(one, LOGITS, TARGETS)
        start = PseudoLabeler(momentum=0.5, **kwargs).state_dict()
        moved = [n for n, t in one.state_dict().items() if n != "updates"
                 and not torch.equal(t, start[n])]
        assert len(moved) >= 2, (schedule, moved)  # the comparison below is not of start values
        for name, tensor in ranks[0][schedule]["state"].items():
            assert torch.equal(tensor, ranks[1][schedule]["state"][name]), (schedule, name)
        # Without the sum over ranks each rank would keep its own: the test can tell.
        assert any(not torch.equal(ranks[0][schedule]["local"][n], ranks[1][schedule]["local"][n])
                   for n in moved), schedule
        for rank, result in enumerate(ranks):
            for name, tensor in one.state_dict().items():
                assert torch.allclose(result[schedule]["state"][name].double(), tensor.double(),
                                      atol=1e-6), (schedule, name)
            rows = slice(rank * 2, rank * 2 + 2)
            assert [w.tolist() for w in result[schedule]["weights"]] == \
                [w[rows].tolist() for w in weights], schedule
    assert not ranks[0]["find_unused"]
    every = {name for name, _ in fresh_model("detached", torch.float32).named_parameters()}
    assert ranks[0]["ddp"]["grads"].keys() == every  # every parameter reached under DDP
    for rank in range(2):
        assert ranks[rank]["ddp"]["terms"]["w2s"] > 0 and ranks[rank]["ddp"]["terms"]["w2s_fp"] > 0
        assert relative_error(ranks[rank]["zero1"]["grads"], ranks[rank]["ddp"]["grads"]) < 1e-5
    assert relative_error(ranks[1]["ddp"]["grads"], ranks[0]["ddp"]["grads"]) == 0.0
    for name, tensor in ranks[0]["ddp"]["state"].items():
        assert torch.equal(tensor, ranks[1]["ddp"]["state"][name]), name
