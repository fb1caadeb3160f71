"""Checks that need two GPUs (one NCCL rank each): DDP gradients against one process, a two-rank
resume with each rank's own random states, and the progress watchdog naming a killed rank.
On a machine with fewer GPUs they read "needs 2 GPUs"; ``--device cpu`` runs them as two gloo
ranks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from mmdist.gpucheck.common import REPO, TINY, failure, random_batch, resume_row, strict_fp32
from mmdist.gpucheck.gradients import fp32_bound, relative, step_gradients
from mmdist.gpucheck.report import FAILED, judged

PER_RANK, SIZE, WIDTH = 2, 64, 0.5


def _model(mode: str):
    from mmdist.config import ModelConfig
    from mmdist.model import build_model

    torch.manual_seed(3)
    return build_model(ModelConfig(variant="multimix", saliency=mode, width=WIDTH, dropout=0.0))


def _shard(batch, rank: int):
    from mmdist.data.step_batch import StepBatch

    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return StepBatch(**{k: (v[rows] if torch.is_tensor(v) else v) for k, v in vars(batch).items()})


def _rank(rank: int, port: int, out: str, device: str) -> None:
    from mmdist.config import EngineConfig, LossConfig
    from mmdist.engine.ddp import DDPStrategy
    from mmdist.engine.distributed import RankInfo
    from mmdist.engine.step import training_losses
    from mmdist.model import VARIANTS

    strict_fp32()
    info = RankInfo(rank, 2, rank, "127.0.0.1", port, "gpucheck", 2)
    strategy = DDPStrategy(EngineConfig(strategy="ddp", device=device, collective_timeout_s=60),
                           info=info)
    try:
        model = _model("detached")
        wrapped = strategy.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
        batch = _shard(random_batch(2 * PER_RANK, SIZE), rank).to(strategy.device)
        loss, _ = training_losses(wrapped, batch, VARIANTS["multimix"], LossConfig(tau=0.0), 1)
        strategy.backward(loss)
        grads = [p.grad.detach().double().cpu().flatten() for p in model.parameters()
                 if p.grad is not None]
        torch.save(torch.cat(grads), f"{out}/rank{rank}.pt")
    finally:
        strategy.close()


def ddp_gradients(ctx, emit) -> None:
    """Two NCCL ranks, each half of the batch (fp32, TF32 off, dropout 0): both hold the same
    averaged gradient, and it is as close to the float64 gradient of one process on the whole
    batch as the CPU's fp32 one is (mmdist.gpucheck.gradients.fp32_bound)."""
    import copy

    import torch.multiprocessing as mp

    from mmdist.engine.distributed import free_port

    tick = time.perf_counter()
    mp.spawn(_rank, args=(free_port(), str(ctx.work_dir), ctx.device), nprocs=2, join=True)
    model = _model("detached")
    _, truth = step_gradients(copy.deepcopy(model).double(),
                              random_batch(2 * PER_RANK, SIZE, torch.float64), torch.device("cpu"))
    _, cpu = step_gradients(model, random_batch(2 * PER_RANK, SIZE), torch.device("cpu"))
    ranks = [torch.load(ctx.work_dir / f"rank{r}.pt") for r in range(2)]
    same = ranks[0].numel() == truth.numel()
    error = relative(ranks[0], truth) if same else float("inf")
    bound = fp32_bound(relative(cpu, truth))
    emit(judged("2 gpus", "ddp gradients = 1 process", {
        "ranks agree": torch.equal(ranks[0], ranks[1]),
        "one process's gradients": error <= bound,
    }, {"error": error, "bound": bound}, time.perf_counter() - tick))


def _torchrun(ctx, run_dir, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "mmdist.train", "--config", str(TINY), f"output_dir={run_dir}",
               f"engine.device={ctx.device}", "engine.strategy=ddp", "trainer.image_log_every=0",
               "trainer.checkpoint_every=3", "model.dropout=0.25", "model.ema_decay=0.9",
               "trainer.deterministic=true", *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=ctx.timeout_s)


def rng_resume(ctx, emit) -> None:
    """Two ranks stopped at step 3 and resumed end where the uninterrupted run ends (each rank
    restores its own random states: dropout differs between ranks)."""
    from mmdist.engine import checkpoint as ckpt

    started = time.perf_counter()
    straight, split = ctx.work_dir / "straight", ctx.work_dir / "split"
    done = _torchrun(ctx, straight, "trainer.max_steps=6")
    if done.returncode != 0:
        emit(judged("2 gpus", "per-rank RNG resume", {"runs exit 0": False}, failure(done)))
        return
    row = resume_row("2 gpus", "per-rank RNG resume", straight, split, 6, 3,
                     lambda more: _torchrun(ctx, split, "trainer.max_steps=6", *more), started)
    states = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, 6)).get("rng_per_rank") or []
    own = len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    if row.status != FAILED and not own:
        row = judged(row.check, row.case, {"each rank its own random states": False},
                     {**row.detail, "rng_states": len(states)}, row.seconds)
    emit(row)


def nccl_watchdog(ctx, emit) -> None:
    """Rank 1 of a two-rank NCCL job killed after its step-2 checkpoint: rank 0 exits non-zero
    within the collective timeout (plus a margin) and names rank 1."""
    from mmdist.engine.distributed import free_port

    timeout_s, tick = 20, time.perf_counter()
    run_dir, port = ctx.work_dir / "run", free_port()
    logs = [ctx.work_dir / f"rank{r}.log" for r in range(2)]
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen(
            [sys.executable, "-m", "mmdist.train", "--config", str(TINY), f"output_dir={run_dir}",
             f"engine.device={ctx.device}", "engine.strategy=ddp", "trainer.max_steps=100000",
             "trainer.checkpoint_every=2", "trainer.image_log_every=0",
             f"engine.collective_timeout_s={timeout_s}"], cwd=REPO, env=env,
            stdout=logs[rank].open("w"), stderr=subprocess.STDOUT))
    try:
        checkpoint = run_dir / "checkpoints" / "step_00000002.pt"
        while not checkpoint.exists() and all(p.poll() is None for p in ranks):
            time.sleep(0.05)
        started = all(p.poll() is None for p in ranks)
        ranks[1].kill()
        killed = time.monotonic()
        try:
            code = ranks[0].wait(timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            code = None
        waited = time.monotonic() - killed
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = logs[0].read_text(errors="replace")
    emit(judged("2 gpus", "NCCL watchdog", {
        "both ranks trained to a checkpoint": started,
        "rank 0 exits non-zero": code not in (None, 0),
        "within the collective timeout": waited < timeout_s + 15,
        "names the dead rank": "rank(s) 1 stopped answering" in text,
    }, {"waited_s": waited, "exit": code, "log": " / ".join(text.strip().splitlines()[-2:])},
        time.perf_counter() - tick))
