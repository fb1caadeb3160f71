"""Host time of the data path per training step, to hold against the device's step time
(``python -m mmdist.bench step --device cuda``): every stream's batch built, pinned when the
training device is CUDA, copied there and turned into model input, exactly as the trainer does,
with nothing else running.

``host_ms_per_step`` (wall time per step) and ``batches_per_s`` are the feed's own rate: the most
steps per second it can sustain. With ``--step-ms S`` the consumer sleeps S ms per step, as a
training thread waits on its device step; ``host_ms_per_step`` then includes that sleep, and
``wait_ms_per_step`` (the time the consumer waited for its batch) is what remains exposed of the
feed: near 0 when the prefetching thread, the workers or DALI keep up. Built-in synthetic data, or a prepared cache
(``--cache``, the classification pool; ``--seg-cache`` the segmentation one).
"""

from __future__ import annotations

import os
import time

import torch

from mmdist.augment.step_source import build_step_source
from mmdist.config import load_config
from mmdist.data.feeding import default_prefetch, iterate_steps
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS


def add_arguments(parser) -> None:
    parser.add_argument("--backend", default="torch", choices=["torch", "dali"])
    parser.add_argument("--batch", type=int, default=64, help="images per stream")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--variant", default="multimix", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="training device (auto: cuda when there is one)")
    parser.add_argument("--augment-device", default="cpu", choices=["cpu", "gpu"],
                        help="where DALI runs its operators (backend dali)")
    parser.add_argument("--workers", type=int, default=0,
                        help="batch worker processes (torch backend; 0: a prefetching thread)")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="batches the thread keeps ready (0: inline; default: the trainer's)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads, and DALI pipeline threads")
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="simulated device step per batch, during which the feed runs ahead")
    parser.add_argument("--images", type=int, default=400, help="built-in images per task")
    parser.add_argument("--cache", default=None, help="prepared cache for the classification pool")
    parser.add_argument("--seg-cache", default=None, help="prepared cache for the segmentation pool")


def _config(args):
    overrides = [f"data.image_size={args.size}", f"data.batch_size={args.batch}",
                 f"data.augment.backend={args.backend}",
                 f"data.augment.device={args.augment_device}",
                 f"data.augment.threads={args.threads}", f"data.workers={args.workers}",
                 f"model.variant={args.variant}"]
    for task, cache in (("classification", args.cache), ("segmentation", args.seg_cache)):
        if cache:
            overrides += [f"data.{task}.kind=cache", f"data.{task}.path={cache}"]
        else:
            overrides.append(f"data.{task}.count={args.images}")
    if not args.cache:
        overrides.append(f"data.budget.classification_labeled={args.images // 4}")
    if not args.seg_cache:
        overrides.append(f"data.budget.segmentation_labeled={args.images // 4}")
    return load_config(None, overrides)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    config = _config(args)
    spec = VARIANTS[args.variant]
    source = build_step_source(config, build_task_data(config, spec.tasks), spec.streams)
    prefetch = default_prefetch(device) if args.prefetch is None else args.prefetch
    batches = iterate_steps(source, 0, args.warmup + args.steps, args.workers, device=device,
                            prefetch=prefetch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    waited, started, pinned, host_bytes = 0.0, None, None, 0
    for index in range(args.warmup + args.steps):
        if index == args.warmup:
            started, waited = time.perf_counter(), 0.0
        before = time.perf_counter()
        raw = next(batches)
        batch = raw.to(device, non_blocking=True).as_model_input()
        sync()  # the copy and the conversion belong to the feed
        waited += time.perf_counter() - before
        if pinned is None:
            first = getattr(raw, spec.streams[0])
            pinned = first.is_pinned() if first.device.type == "cpu" else None
            host_bytes = sum(t.nbytes for t in vars(raw).values()
                             if t is not None and t.device.type == "cpu")
        del batch
        if args.step_ms:
            time.sleep(args.step_ms / 1000.0)
    seconds = time.perf_counter() - started
    batches.close()
    step_ms = 1000.0 * seconds / args.steps
    return {"backend": args.backend, "variant": args.variant, "size": args.size,
            "batch_per_stream": args.batch, "streams": len(spec.streams), "steps": args.steps,
            "device": str(device), "augment_device": args.augment_device if args.backend == "dali"
            else "cpu", "workers": args.workers,
            "prefetch": prefetch if args.workers == 0 and args.backend == "torch" else None,
            "pinned": pinned, "host_mb_per_step": host_bytes / 2**20, "threads": args.threads,
            "step_ms": args.step_ms, "host_ms_per_step": step_ms, "batches_per_s": 1000.0 / step_ms,
            "wait_ms_per_step": 1000.0 * waited / args.steps,
            "load_average_1min": os.getloadavg()[0]}
