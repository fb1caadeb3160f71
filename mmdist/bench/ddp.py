"""Distributed scaling: ``python -m mmdist.bench ddp [--image-size 64 --batch-size 4 ...]``.

Times the real training step (``training_losses`` + the strategy's backward and update) on
random five-stream batches, with no data loading, in fresh processes on this machine:

- 1 rank x T threads (the single strategy, on rank 0 while rank 1 waits) against 2 ranks x T
  threads under DDP with the same per-rank batch: ``scaling_efficiency`` = 2-rank throughput /
  (2 x 1-rank throughput) from the two median step times, and ``scaling_efficiency_paired``,
  the median over rounds of the same ratio within each round (less sensitive to drifts);
- the share of the DDP step spent in communication: the step with and without DDP's gradient
  all-reduce (``no_sync``) (``comm_share_exposed``), and a bare all-reduce of the gradient's
  size against the step (``comm_share_allreduce``);
- the saliency overhead: step time with 'detached' and 'differentiable' over 'none', under DDP
  and under DeepSpeed (``--zero`` stage, default 1), and for one process.
All configurations live in one 2-rank job and take their steps in turn (one step of each per
round), so a busy machine slows them alike. Times are medians over ``--steps`` rounds after
``--warmup``; a step's time is the slowest rank's. Only ratios taken in one run are comparable.
With ``--device cuda`` the two ranks need two GPUs.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

MODES = ("none", "detached", "differentiable")
PEAK_MIB: dict[str, float] = {}
"""Peak GPU memory per step of each timed configuration (CUDA only), filled by _time_steps."""


def add_arguments(parser) -> None:
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4, help="images per stream per rank")
    parser.add_argument("--width", type=float, default=0.5, help="model channel multiplier")
    parser.add_argument("--variant", default="multimix")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--zero", type=int, default=1, choices=(0, 1, 2),
                        help="DeepSpeed ZeRO stage (configs/deepspeed/zeroN.json)")
    parser.add_argument("--no-deepspeed", action="store_true", help="skip the DeepSpeed runs")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC weights and batches (engine.channels_last=true; the trainer's "
                             "default is NCHW)")


def _batch(args, world_rank: int):
    import torch

    from mmdist.data.step_batch import StepBatch
    from mmdist.model import VARIANTS

    g = torch.Generator().manual_seed(1000 + world_rank)
    shape = (args.batch_size, 1, args.image_size, args.image_size)
    batch = StepBatch()
    for name in VARIANTS[args.variant].streams:
        setattr(batch, name, torch.rand(shape, generator=g) * 2 - 1)
    if batch.seg_labeled is not None:
        batch.seg_labeled_mask = (torch.rand(shape, generator=g) > 0.5).float()
    if batch.cls_labeled is not None:
        batch.cls_labeled_target = torch.randint(0, 2, (args.batch_size,), generator=g)
    return batch


class _Timed:
    """One configuration to time: its own strategy, wrapped model and fixed batch."""

    def __init__(self, args, strategy, mode: str, sync: bool = True):
        import torch

        from mmdist.config import ModelConfig
        from mmdist.model import build_model

        torch.manual_seed(0)
        model = build_model(ModelConfig(variant=args.variant, saliency=mode, width=args.width))
        if args.channels_last:  # as the trainer builds it (engine.channels_last)
            model = model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in model.parameters())
        self.strategy, self.mode, self.sync = strategy, mode, sync
        self.wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
        self.batch = _batch(args, strategy.rank).to(strategy.device,
                                                    channels_last=args.channels_last)
        self.times: list[float] = []
        self.peak_mib = 0.0

    def step(self, args, index: int) -> None:
        import contextlib

        import torch

        from mmdist.config import LossConfig
        from mmdist.engine.precision import autocast
        from mmdist.engine.step import training_losses
        from mmdist.model import VARIANTS

        strategy = self.strategy
        cuda = strategy.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(strategy.device)
        strategy.barrier()
        tick = time.perf_counter()
        skip_sync = not self.sync and hasattr(self.wrapped, "no_sync")
        with (self.wrapped.no_sync() if skip_sync else contextlib.nullcontext()):
            with autocast(strategy.device, strategy.precision):
                loss, _ = training_losses(self.wrapped, self.batch, VARIANTS[args.variant],
                                          LossConfig(), index)
            strategy.backward_step(loss)
        strategy.synchronize()  # the step's kernels have run, not just been queued
        if cuda:
            peak = torch.cuda.max_memory_allocated(strategy.device) / 2**20
            self.peak_mib = max(self.peak_mib, peak)
        # On the communication device: NCCL reduces CUDA tensors only.
        elapsed = torch.tensor([time.perf_counter() - tick], dtype=torch.float64,
                               device=strategy.device)
        if strategy.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if index >= args.warmup:
            self.times.append(float(elapsed))

    def median(self) -> float:
        return statistics.median(self.times)


def _time_all(args, configs: dict, rank: int, world: int) -> dict:
    """Interleave the configurations step by step, so a busy machine slows all of them alike.
    A one-process configuration runs on rank 0 while the other ranks wait.
    Returns {name: median seconds per step (slowest rank)}."""
    import torch.distributed as dist

    for index in range(args.warmup + args.steps):
        for timed in configs.values():  # the same names, in the same order, on every rank
            if timed is not None:
                timed.step(args, index)
            if world > 1:
                dist.barrier()
    out = {name: timed.median() for name, timed in configs.items() if timed is not None}
    if "ddp_detached" in configs and rank == 0:
        # The rounds interleave the configurations: a per-round ratio cancels slow drifts of
        # the machine that the two medians would each carry.
        pairs = zip(configs["single_detached"].times, configs["ddp_detached"].times)
        out["paired_efficiency"] = statistics.median(single / ddp for single, ddp in pairs)
    for name, timed in configs.items():
        if timed is not None and timed.peak_mib:
            PEAK_MIB[name] = timed.peak_mib
    return out


def _allreduce_seconds(numel: int, device, repeats: int = 10) -> float:
    import torch
    import torch.distributed as dist

    from mmdist.engine.devices import synchronize

    buffer = torch.ones(numel, device=device)
    dist.all_reduce(buffer)
    synchronize(device)
    dist.barrier()
    tick = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(buffer)
    synchronize(device)  # NCCL returns once the reductions are queued, not done
    return (time.perf_counter() - tick) / repeats


def _worker(rank: int, world: int, port: int, args, out_dir: str) -> None:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.device == "cpu" else "cuda")
    from mmdist.config import EngineConfig
    from mmdist.engine.distributed import RankInfo
    from mmdist.engine.single import SingleProcessStrategy

    configs: dict = {}
    for mode in MODES:  # one process: rank 0 steps, the others hold a place (None) and wait
        strategy = SingleProcessStrategy(EngineConfig(device=args.device, precision=args.precision))
        configs[f"single_{mode}"] = _Timed(args, strategy, mode) if rank == 0 else None
    if world > 1:
        from mmdist.engine.ddp import DDPStrategy

        info = RankInfo(rank, world, rank, "127.0.0.1", port, "bench")
        engine = EngineConfig(strategy="ddp", device=args.device, precision=args.precision)
        for mode in MODES:
            configs[f"ddp_{mode}"] = _Timed(args, DDPStrategy(engine, info=info), mode)
        configs["ddp_detached_no_sync"] = _Timed(args, DDPStrategy(engine, info=info), "detached",
                                                 sync=False)
        if not args.no_deepspeed:
            from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy

            repo = Path(__file__).resolve().parents[2]
            ds_engine = EngineConfig(strategy="deepspeed", device=args.device,
                                     precision=args.precision, deepspeed_config=str(
                                         repo / f"configs/deepspeed/zero{args.zero}.json"))
            for mode in MODES:
                configs[f"deepspeed_{mode}"] = _Timed(args, DeepSpeedStrategy(ds_engine, info=info),
                                                      mode)
    params = configs["ddp_none" if world > 1 else "single_none"].params
    out = _time_all(args, configs, rank, world)
    out["params"] = params
    if world > 1:
        out["allreduce"] = _allreduce_seconds(params, configs["ddp_none"].strategy.device)
        strategy = configs["ddp_none"].strategy
        strategy.barrier()  # no rank tears down while another still reduces
        # The DDP wrappers (their reducers hold the process group) go before the group does:
        # torn down the other way round at exit, a busy machine saw rank 1 abort in C++.
        configs.clear()
        gc.collect()
        strategy.close()
    if rank == 0:
        out["peak_gpu_mib"] = dict(PEAK_MIB)
        Path(out_dir, f"world{world}.json").write_text(json.dumps(out))


def _spawn(world: int, args, out_dir: str) -> dict:
    """Run the timing job on ``world`` ranks; rank 0's results."""
    import torch.multiprocessing as mp

    from mmdist.engine.distributed import free_port

    mp.spawn(_worker, args=(world, free_port(), args, out_dir), nprocs=world, join=True)
    return json.loads(Path(out_dir, f"world{world}.json").read_text())


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        times = _spawn(2, args, out_dir)  # single_* entries: one process on rank 0
    images = _batch(args, 0).image_count
    result = {
        "load_average_1min": os.getloadavg()[0],
        "image_size": args.image_size, "batch_per_stream_per_rank": args.batch_size,
        "images_per_rank_step": images, "width": args.width, "variant": args.variant,
        "params": times["params"], "threads_per_rank": args.threads, "precision": args.precision,
        "device": args.device, "channels_last": args.channels_last,
        "step_s": dict(times),
        "images_per_s_1rank": images / times["single_detached"],
        "images_per_s_2ranks": 2 * images / times["ddp_detached"],
    }
    result["step_s"].pop("params", None)
    result["step_s"].pop("peak_gpu_mib", None)
    if times["peak_gpu_mib"]:
        result["peak_gpu_mib"] = times["peak_gpu_mib"]
    result["scaling_efficiency"] = (result["images_per_s_2ranks"]
                                    / (2 * result["images_per_s_1rank"]))
    result["scaling_efficiency_paired"] = result["step_s"].pop("paired_efficiency")
    result["comm_share_exposed"] = 1 - times["ddp_detached_no_sync"] / times["ddp_detached"]
    result["comm_share_allreduce"] = times["allreduce"] / times["ddp_detached"]
    for engine in ("single", "ddp") + (() if args.no_deepspeed else ("deepspeed",)):
        for mode in ("detached", "differentiable"):
            result[f"saliency_overhead_{engine}_{mode}"] = (times[f"{engine}_{mode}"]
                                                            / times[f"{engine}_none"])
    return result
