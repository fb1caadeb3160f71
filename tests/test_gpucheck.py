"""GPU acceptance: ``python -m mmdist.gpucheck`` runs its checks and reports them (tried on the
CPU here), and each of its checks is also a gpu-marked test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdist.gpucheck import runs, steps
from mmdist.gpucheck.__main__ import Context
from mmdist.gpucheck.report import NOT_INSTALLED, PASSED, SKIPPED

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpucheck_runs_every_check_on_the_cpu_from_the_checkout(tmp_path):
    # As on a GPU machine: PYTHONPATH=. and the checkout, nothing imported from site-packages.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "mmdist.gpucheck", "--device", "cpu", "--out",
                           str(tmp_path / "out"), "--skip", "tests"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpucheck.json").read_text())
    rows = {(r["check"], r["case"]): r for r in report["rows"]}
    assert report["failed"] == 0
    for precision in ("fp32", "bf16", "fp16"):
        for mode in ("none", "detached", "differentiable"):
            assert rows["steps", f"{precision} {mode}"]["status"] == PASSED
    assert rows["ddp", "1-rank run + resume"]["detail"]["max_param_difference"] == 0.0
    assert rows["deepspeed", "ZeRO-2 fp16"]["status"] == SKIPPED
    assert {rows["evaluate", "test sets"]["status"], rows["predict", "one image"]["status"]} == {
        PASSED}
    assert "| bench | bf16 detached 64px | passed |" in (tmp_path / "out" / "gpucheck.md").read_text()


def test_a_missing_library_is_reported_not_installed_never_passed(monkeypatch, tmp_path):
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __import__

    def no_deepspeed(name, *args, **kwargs):
        if name == "deepspeed":
            raise ModuleNotFoundError("No module named 'deepspeed'", name="deepspeed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_deepspeed)
    from mmdist.gpucheck.report import guarded

    rows = guarded("deepspeed", lambda: runs.deepspeed_runs(Context.for_device("cpu", tmp_path)))
    assert [(r.status, r.detail) for r in rows] == [(NOT_INSTALLED, {"module": "deepspeed"})]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture()
def cuda_context(tmp_path):
    return Context.for_device("cuda", tmp_path)


def assert_all_passed(rows):
    assert rows and all(r.status == PASSED for r in rows), [(r.case, r.status, r.detail)
                                                              for r in rows]


@pytest.mark.gpu
@needs_cuda
def test_training_steps_in_every_precision_and_saliency_mode_on_cuda(cuda_context):
    assert_all_passed(steps.training_steps(cuda_context))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(600)
def test_one_rank_nccl_ddp_run_resumes_and_evaluates_on_cuda(cuda_context):
    assert_all_passed(runs.ddp_and_resume(cuda_context))
    assert_all_passed(runs.evaluate_and_predict(cuda_context))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(600)
def test_deepspeed_zero0_and_zero2_in_bf16_and_fp16_on_cuda(cuda_context):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed")
    assert_all_passed(runs.deepspeed_runs(cuda_context))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(600)
def test_step_benchmark_at_256_px_on_cuda(cuda_context):
    assert_all_passed(steps.step_benchmark(cuda_context))
