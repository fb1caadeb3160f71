"""Checks that misbehave on purpose, run through the real child-process runner by the tests
(``main(checks=...)`` with Check entries naming ``gpucheck_probes:FUNCTION``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mmdist.gpucheck.report import judged


def passes(ctx, emit) -> None:
    emit(judged("probe", "passes", {"one plus one": 1 + 1 == 2}, {}))


def fails(ctx, emit) -> None:
    emit(judged("probe", "fails", {"one plus one is three": 1 + 1 == 3}, {}))


def crashes(ctx, emit) -> None:
    """Reports its first case, then aborts (as a CUDA error or an NCCL abort would)."""
    emit(judged("crash", "before", {"ran": True}, {}))
    os.abort()


def killed(ctx, emit) -> None:
    """Dies of SIGKILL, as under the out-of-memory killer."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def hangs(ctx, emit) -> None:
    """Notes which rows gpucheck.json already holds, reports one case, then hangs."""
    report = json.loads((Path(ctx.out) / "gpucheck.json").read_text())
    (Path(ctx.work) / "seen.json").write_text(json.dumps([r["case"] for r in report["rows"]]))
    emit(judged("hang", "before", {"ran": True}, {}))
    time.sleep(600)


def _start_worker(ctx) -> None:
    """A worker in a session of its own (as torchrun starts its ranks); its pid in worker.pid."""
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              start_new_session=True)
    (Path(ctx.work) / "worker.pid").write_text(str(worker.pid))


def hangs_with_a_worker(ctx, emit) -> None:
    _start_worker(ctx)
    time.sleep(600)


def leaves_a_worker(ctx, emit) -> None:
    """Ends normally, its worker still running (a launcher killed by its own timeout)."""
    _start_worker(ctx)
    emit(judged("leaves", "case", {"ran": True}, {}))


def imports_missing_mmdist_module(ctx, emit) -> None:
    import mmdist.no_such_module  # noqa: F401


def starts_fresh(ctx, emit) -> None:
    """Fails when its folder still holds what an earlier run left there."""
    marker = Path(ctx.work) / "checkpoint_from_an_earlier_run"
    earlier = marker.exists()
    marker.write_text("x")
    emit(judged("fresh", "empty folder", {"nothing from an earlier run": not earlier}, {}))


def rank_environment(ctx, emit) -> None:
    """Inside an allocation of several tasks a child must still be one process."""
    from mmdist.engine.distributed import discover_ranks

    seen = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")
            if k in os.environ}
    emit(judged("ranks", "one process", {"no rank variables": not seen,
                                          "world size 1": discover_ranks().world_size == 1},
                seen))
