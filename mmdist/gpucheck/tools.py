"""``python -m mmdist.evaluate`` and ``python -m mmdist.predict`` on the device, on the run the
ddp check trained (bf16, EMA, best.pt)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from mmdist.gpucheck.common import REPO, failure
from mmdist.gpucheck.report import judged, not_run


def _python(ctx, args: list[str]):
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=ctx.timeout_s)


def evaluate_and_predict(ctx, emit) -> None:
    import numpy as np
    from PIL import Image

    from mmdist.engine import checkpoint as ckpt

    run_dir = Path(ctx.out) / "work" / "ddp_runs" / "bf16"
    if not (run_dir / "summary.json").is_file():
        for case in ("evaluate", "predict"):
            emit(not_run("evaluate", case, "no run trained by this check (see the ddp rows)"))
        return
    tick = time.perf_counter()
    done = _python(ctx, ["-m", "mmdist.evaluate", str(run_dir), "--no-plots",
                         f"engine.device={ctx.device}"])
    path = run_dir / "eval" / "metrics.json"
    if done.returncode != 0 or not path.is_file():
        emit(judged("evaluate", "evaluate", {"exits 0 with metrics.json": False}, failure(done)))
    else:
        metrics = json.loads(path.read_text())
        scores = {name: s["metrics"].get("dice", s["metrics"].get("acc"))
                  for name, s in metrics["test_sets"].items()}
        emit(judged("evaluate", "evaluate", {
            "best.pt chosen": Path(str(metrics.get("checkpoint"))).name == "best.pt",
            "EMA weights": metrics.get("weights") == "ema",
            "finite scores": bool(scores) and all(math.isfinite(v) for v in scores.values()),
        }, {**scores, "checkpoint": Path(str(metrics.get("checkpoint"))).name},
            time.perf_counter() - tick))
    tick = time.perf_counter()
    image = ctx.work_dir / "chest.png"
    pixels = (np.random.default_rng(0).random((200, 180)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    done = _python(ctx, ["-m", "mmdist.predict", str(ckpt.best_checkpoint_path(run_dir)),
                         str(image), "--out", str(ctx.work_dir), "--device", ctx.device])
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(lines) != 1:
        emit(judged("evaluate", "predict", {"exits 0 with one result": False}, failure(done)))
        return
    probabilities = list(lines[0].get("probabilities", {}).values()) \
        if isinstance(lines[0].get("probabilities"), dict) else lines[0].get("probabilities", [])
    emit(judged("evaluate", "predict", {
        "probabilities sum to 1": bool(probabilities) and abs(sum(probabilities) - 1) < 1e-4,
        "mask written": Path(lines[0].get("mask", "")).is_file(),
    }, {"predicted": lines[0].get("predicted")}, time.perf_counter() - tick))
