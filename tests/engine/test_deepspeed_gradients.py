"""DeepSpeed ZeRO-0/1/2 on two gloo ranks gives DDP's gradients for every saliency mode, in fp32
and under bf16 autocast (gradients reduced in fp32 unless engine.low_precision_reduce). One launch of two processes covers all of it: the first DeepSpeed start on a
machine compiles its shared-memory comm op (minutes, cached under ~/.cache/torch_extensions)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from test_ddp_gradients import (LOSSES, MODES, fresh_model, free_port, global_batch,
                                relative_error, shard)

from mmdist.config import EngineConfig
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.checkpointer import Checkpointer
from mmdist.engine.distributed import RankInfo
from mmdist.engine.precision import autocast
from mmdist.engine.step import training_losses
from mmdist.model import VARIANTS

REPO = Path(__file__).resolve().parents[2]
STAGES = (0, 1, 2)


def _one_step(strategy, mode: str, rank: int, world: int) -> dict[str, torch.Tensor]:
    # NHWC batches as the trainer builds them (engine.channels_last). DeepSpeed needs NCHW
    # weights: it gets NHWC ones and its strategy converts them; DDP gets NCHW ones, so both run
    # the same kernels.
    model = fresh_model(mode, torch.float32)
    if hasattr(strategy, "engine"):  # a DeepSpeedStrategy
        model = model.to(memory_format=torch.channels_last)
    wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    batch = shard(global_batch(world, torch.float32), rank).to("cpu", channels_last=True)
    with autocast(strategy.device, strategy.precision):
        loss, _ = training_losses(wrapped, batch, VARIANTS["multimix"], LOSSES, 1)
    strategy.backward(loss)
    grads = strategy.gradients()
    assert strategy.optimizer_step()
    return grads


def _params(strategy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in strategy.model.state_dict().items()}


def parts(strategy, run_dir: Path) -> Checkpointer:
    """The strategy's own checkpoint parts (as the trainer registers them) over ``run_dir``."""
    saver = Checkpointer(run_dir, strategy, keep=2)
    for name, (part, options) in strategy.checkpoint_parts().items():
        saver.register(name, part, **options)
    return saver


def _checkpoint_round_trip(strategy, rank: int, world: int, run_dir: Path) -> dict:
    """Save a ZeRO-2 engine after one step, take a second step; then restore the checkpoint into
    a differently initialised engine and take the same second step: weights and Adam moments
    must come back, so both second steps land on the same weights."""
    parts(strategy, run_dir).save(1)
    saved = _params(strategy)
    batch = shard(global_batch(world, torch.float32, seed=11), rank)

    def second_step():
        loss, _ = training_losses(strategy.engine, batch, VARIANTS["multimix"], LOSSES, 2)
        strategy.backward(loss)
        strategy.optimizer_step()
        return _params(strategy)

    continued = second_step()
    torch.manual_seed(99)
    other = fresh_model("differentiable", torch.float32)
    for param in other.parameters():
        param.data.add_(0.1)
    strategy.setup(other, torch.optim.Adam(other.parameters(), lr=1e-3))
    latest = strategy.latest_checkpoint(run_dir)
    state = ckpt.load_checkpoint(latest)
    parts(strategy, run_dir).restore(state, latest)
    restored = _params(strategy)
    resumed = second_step()
    try:  # a .pt without shards beside it (another strategy's): one checkpoint error, no traceback
        parts(strategy, run_dir).restore({**state, "deepspeed_tag": None}, latest)
        foreign = None
    except ckpt.CheckpointError as exc:
        foreign = str(exc)
    return {"latest": str(latest), "step": state["step"], "foreign": foreign,
            "restore_error": relative_error(restored, saved),
            "resume_error": relative_error(resumed, continued),
            "moved": relative_error(continued, saved)}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ["DS_ACCELERATOR"] = "cpu"
    from mmdist.engine.ddp import DDPStrategy
    from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy

    info = RankInfo(rank, world, rank, "127.0.0.1", port, "test")
    results = {}
    ddp = DDPStrategy(EngineConfig(strategy="ddp", device="cpu"), info=info)
    for mode in MODES:
        results["ddp", mode] = _one_step(ddp, mode, rank, world)
    for stage in STAGES:
        config = EngineConfig(strategy="deepspeed", device="cpu",
                              deepspeed_config=str(REPO / f"configs/deepspeed/zero{stage}.json"))
        strategy = DeepSpeedStrategy(config, info=info)
        for mode in MODES:
            results[f"zero{stage}", mode] = _one_step(strategy, mode, rank, world)
        if stage == 2:
            results["resume"] = _checkpoint_round_trip(strategy, rank, world, Path(out_dir) / "run")
    # bf16 autocast on both engines: DeepSpeed must reduce in fp32 as DDP does, unless asked.
    ddp_bf16 = DDPStrategy(EngineConfig(strategy="ddp", device="cpu", precision="bf16"), info=info)
    results["ddp_bf16"] = _one_step(ddp_bf16, "differentiable", rank, world)
    for stage, low in [(0, False), (1, False), (2, False), (1, True)]:
        config = EngineConfig(strategy="deepspeed", device="cpu", precision="bf16",
                              low_precision_reduce=low,
                              deepspeed_config=str(REPO / f"configs/deepspeed/zero{stage}.json"))
        strategy = DeepSpeedStrategy(config, info=info)
        results[f"zero{stage}_bf16" + ("_low" if low else "")] = _one_step(
            strategy, "differentiable", rank, world)
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    ddp.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_zero_stages_give_ddp_gradients_in_fp32_and_under_bf16(tmp_path: Path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    errors = {}
    for stage in STAGES:
        for mode in MODES:
            want = ranks[0]["ddp", mode]
            for rank in range(2):
                errors[stage, mode, rank] = relative_error(ranks[rank][f"zero{stage}", mode], want)
    print("relative errors vs DDP:", errors)
    assert max(errors.values()) < 1e-5, errors
    # Under the same bf16 autocast, ZeRO-0/1/2 reduce in fp32 and give DDP's gradients; a bf16
    # reduction (engine.low_precision_reduce) is off by its 8-bit mantissa, which this tolerance
    # catches.
    bf16 = {name: relative_error(ranks[0][name], ranks[0]["ddp_bf16"])
            for name in ("zero0_bf16", "zero1_bf16", "zero2_bf16", "zero1_bf16_low")}
    print("bf16 relative errors vs DDP bf16:", bf16)
    assert all(torch.isfinite(g).all() for g in ranks[0]["zero1_bf16"].values())
    assert max(bf16[f"zero{stage}_bf16"] for stage in STAGES) < 1e-5, bf16
    assert bf16["zero1_bf16_low"] > 1e-4, bf16
    for rank in range(2):
        resume = ranks[rank]["resume"]
        assert resume["latest"] == str(tmp_path / "run" / "checkpoints" / "step_00000001.pt")
        assert (tmp_path / "run" / "checkpoints" / "step_00000001").is_dir()  # the ZeRO shards
        assert resume["step"] == 1 and resume["moved"] > 1e-4
        assert resume["restore_error"] == 0.0 and resume["resume_error"] == 0.0, resume
        assert "no DeepSpeed shards beside it" in resume["foreign"], resume
