"""The command-line programs on the device: a one-rank NCCL DDP run and its resume, DeepSpeed
ZeRO-0/2 in bf16 and fp16, evaluate and predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mmdist.gpucheck.report import FAILED, NOT_INSTALLED, PASSED, SKIPPED, Row

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def _env(ctx) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # The project need not be installed: the child processes import it from the repository.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(ctx.threads))
    return env


def _one_rank(ctx) -> dict:
    """Variables of a one-rank job (the generic launcher form), so ddp/deepspeed start a real
    process group: NCCL on a GPU, gloo on the CPU."""
    from mmdist.engine.distributed import free_port

    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port())}


def _python(ctx, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _train(ctx, run_dir: Path, *overrides: str, env_extra=None) -> tuple[subprocess.CompletedProcess, dict]:
    args = ["-m", "mmdist.train", "--config", str(TINY), f"output_dir={run_dir}",
            f"engine.device={ctx.device_name}", "trainer.image_log_every=0",
            "trainer.val_every=0", *overrides]
    done = _python(ctx, args, {**_env(ctx), **(env_extra or {})}, ctx.run_timeout)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return done, summary


def _failure(done: subprocess.CompletedProcess) -> dict:
    tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
    return {"exit": done.returncode, "stderr": " / ".join(tail)}


def ddp_and_resume(ctx) -> list[Row]:
    from mmdist.engine import checkpoint as ckpt

    tick = time.perf_counter()
    straight, split = ctx.out / "ddp" / "straight", ctx.out / "ddp" / "split"
    common = ["engine.strategy=ddp", "trainer.checkpoint_every=3", "trainer.deterministic=true"]
    results = []
    for run_dir, steps, extra in ((straight, 6, []), (split, 3, []),
                                  (split, 6, ["trainer.resume=true"])):
        done, summary = _train(ctx, run_dir, *common, f"trainer.max_steps={steps}", *extra,
                               env_extra=_one_rank(ctx))
        if done.returncode != 0:
            return [Row("ddp", "1-rank run + resume", FAILED, _failure(done),
                        time.perf_counter() - tick)]
        results.append(summary)
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(split, 6))
    difference = max(float((a["model"][k].double() - b["model"][k].double()).abs().max())
                     for k in a["model"])
    detail = {"strategy": results[-1]["strategy"], "device": results[-1]["device"],
              "start_step": results[-1]["start_step"], "max_param_difference": difference}
    # The decoder's bilinear upsampling has no deterministic CUDA backward: a few ulps allowed.
    ok = (results[-1]["start_step"] == 3 and results[-1]["steps"] == 6
          and results[-1]["strategy"] == "ddp" and difference <= 1e-4
          and (ctx.device_name == "cpu" or results[-1]["device"].startswith("cuda")))
    ctx.trained_run = straight
    return [Row("ddp", "1-rank run + resume", PASSED if ok else FAILED, detail,
                time.perf_counter() - tick)]


def deepspeed_runs(ctx) -> list[Row]:
    import deepspeed  # noqa: F401  (ModuleNotFoundError -> 'not installed')

    rows = []
    for stage in (0, 2):
        for precision in ("bf16", "fp16"):
            case = f"ZeRO-{stage} {precision}"
            if precision == "fp16" and ctx.device_name == "cpu":
                rows.append(Row("deepspeed", case, SKIPPED, {"why": "DeepSpeed refuses fp16 on CPU"}))
                continue
            tick = time.perf_counter()
            run_dir = ctx.out / "deepspeed" / f"zero{stage}_{precision}"
            done, summary = _train(ctx, run_dir, "engine.strategy=deepspeed",
                                   f"engine.deepspeed_config=configs/deepspeed/zero{stage}.json",
                                   f"engine.precision={precision}", "trainer.max_steps=4",
                                   "trainer.checkpoint_every=2", env_extra=_one_rank(ctx))
            ok = done.returncode == 0 and summary.get("status") == "completed"
            detail = ({"skipped_steps": summary["skipped_steps"], "img_per_s":
                       summary["images_per_s"]} if ok else _failure(done))
            rows.append(Row("deepspeed", case, PASSED if ok else FAILED, detail,
                            time.perf_counter() - tick))
    return rows


def evaluate_and_predict(ctx) -> list[Row]:
    import numpy as np
    from PIL import Image

    from mmdist.engine import checkpoint as ckpt

    if getattr(ctx, "trained_run", None) is None:
        return [Row("evaluate", "-", SKIPPED, {"why": "no trained run (the ddp check failed)"})]
    rows, run_dir = [], ctx.trained_run
    tick = time.perf_counter()
    done = _python(ctx, ["-m", "mmdist.evaluate", str(run_dir), "--no-plots",
                         f"engine.device={ctx.device_name}"], _env(ctx), ctx.run_timeout)
    metrics = run_dir / "eval" / "metrics.json"
    ok = done.returncode == 0 and metrics.is_file()
    detail = ({k: v["metrics"].get("dice", v["metrics"].get("acc"))
               for k, v in json.loads(metrics.read_text())["test_sets"].items()} if ok
              else _failure(done))
    rows.append(Row("evaluate", "test sets", PASSED if ok else FAILED, detail,
                    time.perf_counter() - tick))
    tick = time.perf_counter()
    image = ctx.out / "predict" / "chest.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((200, 180)) * 255).astype(np.uint8)).save(image)
    device = "cuda" if ctx.device_name == "cuda" else "cpu"
    done = _python(ctx, ["-m", "mmdist.predict", str(ckpt.find_latest_checkpoint(run_dir)),
                         str(image), "--out", str(image.parent), "--device", device], _env(ctx),
                   ctx.run_timeout)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ok = done.returncode == 0 and len(lines) == 1 and "probabilities" in lines[0] \
        and Path(lines[0].get("mask", "")).is_file()
    rows.append(Row("predict", "one image", PASSED if ok else FAILED,
                    {"predicted": lines[0]["predicted"]} if ok else _failure(done),
                    time.perf_counter() - tick))
    return rows


def gpu_tests(ctx) -> list[Row]:
    """``pytest -m gpu`` in a child process (its junit XML says what passed)."""
    import importlib.util
    import xml.etree.ElementTree as ElementTree

    if importlib.util.find_spec("pytest") is None:
        return [Row("gpu tests", "pytest -m gpu", NOT_INSTALLED, {"module": "pytest"})]
    tick = time.perf_counter()
    report = ctx.out / "gpu-tests.xml"
    # addopts off: --strict-markers would turn the timeout marks into errors where pytest-timeout
    # is not installed.
    # tests/test_gpucheck.py runs these very checks: not twice.
    done = _python(ctx, ["-m", "pytest", str(REPO / "tests"), "-m", "gpu", "-q", "-o", "addopts=",
                         "-p", "no:cacheprovider", f"--junitxml={report}", "-rs",
                         f"--ignore={REPO / 'tests' / 'test_gpucheck.py'}"], _env(ctx),
                   ctx.tests_timeout)
    if not report.is_file():
        return [Row("gpu tests", "pytest -m gpu", FAILED, _failure(done),
                    time.perf_counter() - tick)]
    suite = ElementTree.parse(report).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    skipped = [case.get("name") for case in suite.iter("testcase")
               if case.find("skipped") is not None]
    ok = counts["failures"] == 0 and counts["errors"] == 0
    detail = {**counts, "skipped_tests": ", ".join(skipped)}
    return [Row("gpu tests", "pytest -m gpu", PASSED if ok else FAILED, detail,
                time.perf_counter() - tick)]
