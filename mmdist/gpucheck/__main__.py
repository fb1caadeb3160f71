"""``python -m mmdist.gpucheck --out DIR [--device cuda|cpu] [--only NAME ...] [--skip NAME ...]``:
see mmdist.gpucheck."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from mmdist.gpucheck.registry import CHECKS, CPU_SLOWDOWN, ONE_GPU_BUDGET_S, Check, Context
from mmdist.gpucheck.report import Report, failed, not_run
from mmdist.gpucheck.runner import adopt_orphans, fresh_folder, run_check, why_not_run


def environment() -> dict:
    """Python, torch, CUDA and the GPUs (names and compute capability only: no tensor is made
    on a GPU in this process; the checks run in children)."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if info["gpus"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


def run_all(checks: tuple[Check, ...], device: str, out: Path, gpus: int, report: Report,
            budget_s: float) -> None:
    """Each check in turn, in its own fresh folder under DIR/work; those that cannot run here
    are "not run" with the reason, and none starts once the one-GPU budget is spent."""
    work = fresh_folder(out / "work")
    adopt_orphans()
    started = time.monotonic()
    for check in checks:
        try:
            why = why_not_run(check, device, gpus)
        except Exception as exc:  # e.g. an mmdist module that no longer imports: FAILED
            report.add(failed(check.name, check.cases[0], f"{type(exc).__name__}: {exc}"))
            continue
        left = budget_s - (time.monotonic() - started)
        if not why and check.gpus <= 1 and left <= 1:
            why = f"the {budget_s:.0f} s budget of the check was spent"
        if why:
            for case in check.cases:
                report.add(not_run(check.name, case, why))
            continue
        timeout = check.timeout_s if device == "cuda" else (check.cpu_timeout_s or
                                                             check.timeout_s * CPU_SLOWDOWN)
        timeout = timeout if check.gpus > 1 else min(timeout, left)
        ctx = Context(device=device, out=str(out), work=str(work / check.target.split(":")[1]),
                      gpus=gpus, timeout_s=timeout)
        run_check(check, ctx, report, timeout)


def main(argv: list[str] | None = None, checks: tuple[Check, ...] = CHECKS) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.gpucheck", description=__doc__)
    parser.add_argument("--out", required=True,
                        help="folder for gpucheck.md/.json; DIR/work is emptied on every run")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: the checks that have a small CPU form, to try the machinery "
                             "without a GPU (those rows say device=cpu)")
    names = sorted({c.name for c in checks})
    parser.add_argument("--only", nargs="+", choices=names, help="run only these checks")
    parser.add_argument("--skip", nargs="+", default=[], choices=names)
    parser.add_argument("--budget-s", type=float, default=ONE_GPU_BUDGET_S,
                        help="no check (but the two-GPU ones) starts after this many seconds")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    info = {**environment(), "device": args.device}
    report = Report(out, info)
    print(f"gpucheck: torch {info['torch']} (CUDA {info['torch_cuda']}), "
          f"{info['gpus']} GPU(s) {info.get('gpu', '')}; checks on {args.device}", flush=True)
    chosen = tuple(c for c in checks if c.name not in args.skip
                   and (not args.only or c.name in args.only))
    gpus = info["gpus"] if args.device == "cuda" else 0
    budget = args.budget_s * (CPU_SLOWDOWN if args.device == "cpu" and
                              args.budget_s == ONE_GPU_BUDGET_S else 1)
    run_all(chosen, args.device, out, gpus, report, budget)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
