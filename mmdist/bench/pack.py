"""K copies of the training step as separate processes on one device: what packing K runs buys.

For each K of ``--runs``, K processes each build the step of ``bench step`` (the variant on
random data, B images per stream, five streams), warm up, wait for one another (a file barrier),
time ``--steps`` steps, and keep stepping untimed until the last of them has finished timing, so
every timed step ran beside K - 1 busy neighbours. Per K: the median per-run step time (the
median over runs of each run's median, S_K), each run's images/s, their sum (aggregate images/s),
the peak memory of each process (resident set; on CUDA also torch's peak allocated and reserved)
and the speed-up over K = 1 (aggregate over aggregate). Threads per process: ``--threads``, or
the pack rule (mmdist.launch.pack): the usable CPUs // K.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmdist.model import VARIANTS


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2], metavar="K",
                        help="how many processes share the device, one measurement per K")
    parser.add_argument("--variant", default="multimix", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=10, help="images per stream")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (0: usable CPUs // K)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per K")


def _wait_for(folder: Path, prefix: str, count: int) -> None:
    while len(list(folder.glob(prefix + "*"))) < count:
        time.sleep(0.01)


def child(argv: list[str]) -> dict:
    """One of K processes: build, warm up, barrier, time, keep the load until all are timed."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    import torch

    from mmdist.bench.step import _arm, _time_step

    torch.set_num_threads(args.threads)
    args.saliency, args.compile = "auto", False
    arm = _arm(args, "auto", False, False)
    barrier = Path(args.barrier)
    for step in range(args.warmup):
        _time_step(arm, step)
    (barrier / f"ready_{args.index}").touch()
    _wait_for(barrier, "ready_", args.count)
    times = [_time_step(arm, args.warmup + step) for step in range(args.steps)]
    (barrier / f"timed_{args.index}").touch()
    step = args.warmup + args.steps
    while len(list(barrier.glob("timed_*"))) < args.count:
        _time_step(arm, step)  # keep the neighbours' timed steps under the same load
        step += 1
    out = {"step_s_median": statistics.median(times), "images_per_step": arm["images"],
           "threads": args.threads,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.device == "cuda":
        out["peak_gpu_mib"] = arm["peak_gpu_mib"]
        out["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def _child_argv(args, k: int, index: int, barrier: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "mmdist.bench.pack", "--index", str(index), "--barrier",
            str(barrier), "--count", str(k), "--runs", str(k), "--variant", args.variant,
            "--size", str(args.size), "--batch", str(args.batch), "--width", str(args.width),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(threads),
            "--device", args.device, "--precision", args.precision]


def measure(args, k: int) -> dict:
    """K processes at once; their figures and the pack's aggregate."""
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // k)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="mmdist-pack-") as folder:
        procs = [subprocess.Popen(_child_argv(args, k, i, Path(folder), threads), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(k)]
        outputs = [proc.communicate(timeout=args.timeout) for proc in procs]
    runs = []
    for proc, (out, err) in zip(procs, outputs):
        if proc.returncode != 0:
            raise RuntimeError(f"bench pack: a K={k} process failed (exit {proc.returncode}):\n"
                               + err[-4000:])
        runs.append(json.loads(out.strip().splitlines()[-1]))
    for run in runs:
        run["img_per_s"] = run["images_per_step"] / run["step_s_median"]
    return {"runs": k, "threads_per_run": threads, "images_per_step": runs[0]["images_per_step"],
            "step_s_median": statistics.median(r["step_s_median"] for r in runs),
            "img_per_s_per_run": [r["img_per_s"] for r in runs],
            "img_per_s_aggregate": sum(r["img_per_s"] for r in runs),
            "peak_rss_mib_per_run": [r["peak_rss_mib"] for r in runs],
            **({"peak_gpu_mib_per_run": [r["peak_gpu_mib"] for r in runs],
                "peak_gpu_reserved_mib_per_run": [r["peak_gpu_reserved_mib"] for r in runs]}
               if args.device == "cuda" else {}),
            "step_s_per_run": [r["step_s_median"] for r in runs]}


def run(args) -> dict:
    if any(k < 1 for k in args.runs) or len(set(args.runs)) != len(args.runs):
        raise SystemExit(f"--runs: distinct counts >= 1, got {args.runs}")
    by_runs = [measure(args, k) for k in sorted(args.runs)]
    base = next((r["img_per_s_aggregate"] for r in by_runs if r["runs"] == 1), None)
    for result in by_runs:
        result["speedup_vs_1"] = None if base is None else result["img_per_s_aggregate"] / base
    best = max(by_runs, key=lambda r: r["img_per_s_aggregate"])
    common = {"variant": args.variant, "size": args.size, "batch_per_stream": args.batch,
              "width": args.width, "steps": args.steps, "device": args.device,
              "precision": args.precision, "load_average_1min": os.getloadavg()[0],
              "usable_cpus": len(os.sched_getaffinity(0))}
    if args.device == "cuda":
        import torch

        common["gpu"] = torch.cuda.get_device_name(0)
    return {**common, "by_runs": by_runs, "recommended_runs_per_gpu": best["runs"]}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1:])))
