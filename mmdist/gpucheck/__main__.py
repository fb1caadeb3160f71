"""``python -m mmdist.gpucheck --out DIR [--device cuda|cpu]``: see mmdist.gpucheck."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmdist.gpucheck import report
from mmdist.gpucheck.report import FAILED, NOT_INSTALLED, PASSED, Row


@dataclass
class Context:
    """What the checks share: the device and the sizes that fit it."""

    device_name: str
    out: Path
    size: int
    per_stream: int
    width: float
    steps: int
    bench_size: int
    bench_width: float
    bench_steps: int
    threads: int
    run_timeout: float
    tests_timeout: float
    trained_run: Path | None = None

    @classmethod
    def for_device(cls, device: str, out: Path) -> "Context":
        if device == "cuda":  # the real sizes: the paper's model, 256 px for the benchmark
            return cls("cuda", out, size=128, per_stream=4, width=1.0, steps=4, bench_size=256,
                       bench_width=1.0, bench_steps=10, threads=4, run_timeout=240,
                       tests_timeout=300)
        return cls("cpu", out, size=64, per_stream=2, width=0.25, steps=2, bench_size=64,
                   bench_width=0.25, bench_steps=2, threads=2, run_timeout=300, tests_timeout=600)


def environment(ctx: Context) -> tuple[list[Row], dict]:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    ok = ctx.device_name == "cpu" or info["cuda_available"]
    detail = dict(info) if ok else {**info, "why": "no CUDA device is visible"}
    rows = [Row("environment", ctx.device_name, PASSED if ok else FAILED, detail)]
    return rows + libraries(), info


OPTIONAL_LIBRARIES = ("deepspeed", "nvidia.dali", "submitit", "mpi4py", "tensorboard", "pytest",
                      "skimage", "scipy")


def libraries() -> list[Row]:
    """Which of the project's libraries this Python has: a missing one is 'not installed', and
    the checks that need it say the same instead of passing."""
    import importlib.metadata
    import importlib.util

    rows = []
    for name in OPTIONAL_LIBRARIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a missing parent package (nvidia)
            found = False
        if not found:
            rows.append(Row("library", name, NOT_INSTALLED))
            continue
        distribution = {"nvidia.dali": None, "skimage": "scikit-image"}.get(name, name)
        try:
            version = importlib.metadata.version(distribution) if distribution else "found"
        except importlib.metadata.PackageNotFoundError:
            version = "found"
        rows.append(Row("library", name, PASSED, {"version": version}))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.gpucheck", description=__doc__)
    parser.add_argument("--out", required=True, help="folder for gpucheck.md/.json and the runs")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: the same checks, small, to try the script without a GPU")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["steps", "ddp", "deepspeed", "evaluate", "tests", "bench"])
    args = parser.parse_args(argv)
    ctx = Context.for_device(args.device, Path(args.out).resolve())
    rows, info = environment(ctx)
    if rows[0].status == FAILED:
        return report.write(rows, ctx.out, info)
    from mmdist.gpucheck import runs, steps

    checks = [("steps", steps.training_steps), ("ddp", runs.ddp_and_resume),
              ("deepspeed", runs.deepspeed_runs), ("evaluate", runs.evaluate_and_predict),
              ("tests", runs.gpu_tests), ("bench", steps.step_benchmark)]
    started = time.perf_counter()
    for name, check in checks:
        if name in args.skip:
            continue
        tick = time.perf_counter()
        found = report.guarded(name, lambda: check(ctx))
        if len(found) == 1 and not found[0].seconds:
            found[0].seconds = time.perf_counter() - tick
        rows += found
        print(f"gpucheck: {name} done ({time.perf_counter() - tick:.0f} s)", flush=True)
    info["seconds"] = time.perf_counter() - started
    return report.write(rows, ctx.out, info)


if __name__ == "__main__":
    sys.exit(main())
