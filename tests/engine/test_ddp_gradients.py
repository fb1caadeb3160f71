"""DDP on two gloo ranks gives the gradients of one process on the concatenated global batch,
for every saliency mode (the saliency's autograd.grad runs inside the wrapped forward), in
float64 and in float32 with NHWC (channels_last) weights and batches."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mmdist.config import EngineConfig, LossConfig, ModelConfig
from mmdist.data.step_batch import StepBatch
from mmdist.engine.distributed import RankInfo
from mmdist.engine.step import training_losses
from mmdist.engine.trainer import find_unused_parameters
from mmdist.model import VARIANTS, build_model

MODES = ("none", "detached", "differentiable")
PER_RANK = 2
SIZE = 32
LOSSES = LossConfig(tau=0.0)  # every pseudo-label counts, so the FixMatch term has gradients


def global_batch(world: int, dtype: torch.dtype, seed: int = 7) -> StepBatch:
    """Random five-stream batch of ``PER_RANK * world`` images per stream (rank r reads rows
    [r * PER_RANK, (r + 1) * PER_RANK))."""
    g = torch.Generator().manual_seed(seed)
    n = PER_RANK * world

    def images():
        return (torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1).to(dtype)

    return StepBatch(seg_labeled=images(),
                     seg_labeled_mask=(torch.rand(n, 1, SIZE, SIZE, generator=g) > 0.5).to(dtype),
                     seg_unlabeled=images(), cls_labeled=images(),
                     cls_labeled_target=torch.randint(0, 2, (n,), generator=g),
                     cls_unlabeled_weak=images(), cls_unlabeled_strong=images())


def shard(batch: StepBatch, rank: int) -> StepBatch:
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return StepBatch(**{k: (v[rows] if v is not None else None) for k, v in vars(batch).items()})


def fresh_model(mode: str, dtype: torch.dtype, variant: str = "multimix"):
    torch.manual_seed(3)
    model = build_model(ModelConfig(variant=variant, saliency=mode, width=0.25, dropout=0.0))
    return model.to(dtype)


def reference_gradients(mode: str, dtype: torch.dtype, world: int = 2) -> dict[str, torch.Tensor]:
    """One process, the whole global batch, plain backward."""
    model, batch = fresh_model(mode, dtype), global_batch(world, dtype)
    if dtype == torch.float32:  # the same layout as the DDP ranks
        model = model.to(memory_format=torch.channels_last)
        batch = batch.to("cpu", channels_last=True)
    loss, _ = training_losses(model, batch, VARIANTS["multimix"], LOSSES, 1)
    loss.backward()
    return {n: p.grad.detach().contiguous() for n, p in model.named_parameters()
            if p.grad is not None}


def relative_error(got: dict, want: dict) -> float:
    assert got.keys() == want.keys()
    diff = torch.cat([(got[k] - want[k]).flatten() for k in want]).double()
    ref = torch.cat([want[k].flatten() for k in want]).double()
    return float(diff.norm() / ref.norm())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, cases: list) -> None:
    torch.set_num_threads(1)
    from mmdist.engine.ddp import DDPStrategy

    info = RankInfo(rank, world, rank, "127.0.0.1", port, "test")
    engine = EngineConfig(strategy="ddp", device="cpu", collective_timeout_s=120)
    strategy = DDPStrategy(engine, info=info)
    find_unused = find_unused_parameters(engine, VARIANTS["multimix"])  # as the trainer decides
    try:
        for mode, dtype_name in cases:
            dtype = getattr(torch, dtype_name)
            model = fresh_model(mode, dtype)
            batch = shard(global_batch(world, dtype), rank)
            if dtype == torch.float32:  # the NHWC option (engine.channels_last)
                model = model.to(memory_format=torch.channels_last)
                batch = batch.to("cpu", channels_last=True)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            wrapped = strategy.setup(model, optimizer, find_unused)
            loss, _ = training_losses(wrapped, batch, VARIANTS["multimix"], LOSSES, 1)
            strategy.backward(loss)
            torch.save({"grads": strategy.gradients(), "find_unused": strategy.find_unused},
                       f"{out_dir}/{mode}_{dtype_name}_rank{rank}.pt")
            strategy.optimizer_step()
        # What setup is told reaches DDP (the trainer's 'true', or a variant declaring it).
        model = fresh_model("none", torch.float32)
        strategy.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), True)
        torch.save(strategy.wrapped.find_unused_parameters, f"{out_dir}/told_rank{rank}.pt")
    finally:
        strategy.close()


CASES = [(mode, "float64") for mode in MODES] + [(mode, "float32") for mode in MODES]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_gradients_equal_one_process_on_the_global_batch(tmp_path: Path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path), CASES), nprocs=2, join=True)
    torch.set_num_threads(1)
    errors, references = {}, {}
    for mode, dtype_name in CASES:
        want = references[mode, dtype_name] = reference_gradients(mode, getattr(torch, dtype_name))
        ranks = [torch.load(tmp_path / f"{mode}_{dtype_name}_rank{r}.pt") for r in range(2)]
        assert not ranks[0]["find_unused"], "every multimix parameter gets a gradient"
        every = {name for name, _ in fresh_model(mode, torch.float32).named_parameters()}
        assert ranks[0]["grads"].keys() == every  # ... and so every one got its gradient
        # Both ranks hold the same averaged gradient...
        assert relative_error(ranks[1]["grads"], ranks[0]["grads"]) == 0.0
        # ... and it is the one-process gradient of the concatenated batch.
        errors[(mode, dtype_name)] = relative_error(ranks[0]["grads"], want)
    print("relative errors:", errors)
    assert torch.load(tmp_path / "told_rank0.pt") is True
    # The three modes train differently (the bridge adds decoder inputs, the differentiable one
    # a second-order path into the encoder), so agreeing in each is not agreeing once.
    encoder = {mode: {k: v for k, v in references[mode, "float64"].items()
                      if k.startswith("encoder.")} for mode in MODES}
    assert relative_error(encoder["detached"], encoder["none"]) > 1e-3
    assert relative_error(encoder["differentiable"], encoder["detached"]) > 1e-4
    for (mode, dtype_name), error in errors.items():
        tolerance = 1e-10 if dtype_name == "float64" else 1e-5
        assert error < tolerance, (mode, dtype_name, error)
