"""Augmentation throughput of a full step: every stream's views (weak, strong, masks), from the
uint8 pool to float model inputs, with the torch or the DALI backend.

Prints img_per_s (views per second over all streams of the variant; the five-stream MultiMix step
makes 5 * batch of them). ``--backend both`` times torch and DALI alternately in one process and
adds their ratio. Both get the same CPU budget: DALI runs ``--threads`` pipeline threads, torch
assembles batches in ``--threads`` DataLoader worker processes (inline when 1).
"""

from __future__ import annotations

import statistics
import time

import torch

from mmdist.augment.step_source import build_step_source
from mmdist.config import load_config
from mmdist.data.feeding import iterate_steps
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS


def add_arguments(parser) -> None:
    parser.add_argument("--backend", default="dali", choices=["dali", "torch", "both"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=10, help="images per stream")
    parser.add_argument("--variant", default="multimix", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per backend (alternating with --backend both); the median counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=200, help="built-in images per task")


def _config(args, backend: str):
    return load_config(None, [f"data.image_size={args.size}", f"data.batch_size={args.batch}",
                              f"data.augment.backend={backend}", f"data.augment.device={args.device}",
                              f"data.augment.threads={args.threads}",
                              f"data.workers={args.threads if args.threads > 1 else 0}",
                              f"data.classification.count={args.images}",
                              f"data.segmentation.count={args.images}",
                              f"data.budget.classification_labeled={args.images // 4}",
                              f"data.budget.segmentation_labeled={args.images // 4}",
                              f"model.variant={args.variant}"])


def time_backend(config, task_data, streams, steps: int, warmup: int) -> tuple[float, int]:
    """(seconds for ``steps`` batches after ``warmup`` batches, views per batch)."""
    source = build_step_source(config, task_data, streams)
    batches = iterate_steps(source, 0, warmup + steps, config.data.workers)
    views, start = 0, None
    for index, batch in enumerate(batches):
        if config.data.augment.device == "gpu":
            torch.cuda.synchronize()
        if index == warmup - 1 or (warmup == 0 and start is None):
            start = time.perf_counter()
        views = batch.image_count
    return time.perf_counter() - start, views


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    spec = VARIANTS[args.variant]
    backends = ["torch", "dali"] if args.backend == "both" else [args.backend]
    task_data = build_task_data(_config(args, backends[0]), spec.tasks)
    # The first batch of a warm-up ends the timer's start; the rest are timed.
    timed_steps = args.steps if args.warmup else args.steps - 1
    rates: dict[str, list[float]] = {b: [] for b in backends}
    views = 0
    for _ in range(args.repeats):
        for backend in backends:
            seconds, views = time_backend(_config(args, backend), task_data, spec.streams,
                                          args.steps, args.warmup)
            rates[backend].append(views * timed_steps / seconds)
    out = {"variant": args.variant, "device": args.device, "size": args.size,
           "batch_per_stream": args.batch, "views_per_step": views, "threads": args.threads,
           "steps": args.steps, "repeats": args.repeats}
    if args.backend == "both":
        out.update({f"{b}_img_per_s": statistics.median(r) for b, r in rates.items()})
        out["dali_over_torch"] = out["dali_img_per_s"] / out["torch_img_per_s"]
    else:
        out.update({"backend": args.backend, "img_per_s": statistics.median(rates[args.backend])})
    return out
