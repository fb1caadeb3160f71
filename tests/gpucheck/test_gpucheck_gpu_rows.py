"""Each GPU check of the registry, run as ``make gpu-check`` runs it (its own child process and
timeout), passes on a CUDA machine: no FAILED row, and at least one row that passed. (The gpu
tests row does not run this file: these tests are the check itself.)"""

from __future__ import annotations

import pytest
import torch

from mmdist.gpucheck.registry import CHECKS, Context
from mmdist.gpucheck.report import FAILED, PASSED, Report
from mmdist.gpucheck.runner import run_check, why_not_run

ONE_GPU = [c for c in CHECKS if c.gpus <= 1 and c.name != "evaluate"]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("check", ONE_GPU, ids=[c.target.split(":")[1] for c in ONE_GPU])
def test_each_gpu_check_passes_on_cuda(check, tmp_path):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    why = why_not_run(check, "cuda", gpus)
    if why:
        pytest.skip(why)
    report = Report(tmp_path, {})
    context = Context("cuda", str(tmp_path), str(tmp_path / "work" / check.target.split(":")[1]),
                      gpus, check.timeout_s)
    run_check(check, context, report, check.timeout_s)
    rows = [(r.case, r.status, r.detail) for r in report.rows]
    assert not [r for r in report.rows if r.status == FAILED], rows
    assert any(r.status == PASSED for r in report.rows), rows
