"""The gpu-tests row: only the files that mark gpu tests are collected, a missing third-party
library is "not collected" (named), an mmdist import error FAILS the row, and a row whose tests
all skipped is "not run"; read from a real pytest run's JUnit XML."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mmdist.gpucheck.gpu_tests import gpu_test_files, pytest_command, read_junit, verdict
from mmdist.gpucheck.report import FAILED, NOT_RUN, PASSED

REPO = Path(__file__).resolve().parents[2]

SKIPS = """import pytest
@pytest.mark.gpu
def test_needs_two_gpus():
    pytest.skip("needs two CUDA GPUs")
"""
PASSES = """import pytest
@pytest.mark.gpu
def test_runs():
    assert 1 + 1 == 2
def test_not_gpu():
    assert False, "not a gpu test: never selected"
"""
GPU_TEST = "\n@pytest.mark.gpu\ndef test_x():\n    pass\n"
NO_LIBRARY = "import pytest\nimport no_such_library_xyz\n" + GPU_TEST
NO_MMDIST = "import pytest\nimport mmdist.no_such_module\n" + GPU_TEST


def pytest_row(tmp_path: Path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    xml = tmp_path / "report.xml"
    subprocess.run(pytest_command(sorted(tmp_path / n for n in files), xml), cwd=REPO,
                   capture_output=True, text=True, timeout=120)
    return verdict(read_junit(xml))


def test_a_row_whose_gpu_tests_all_skipped_is_not_run(tmp_path):
    row = pytest_row(tmp_path, {"test_a.py": SKIPS})
    assert row.status == NOT_RUN and "needs two CUDA GPUs" in row.detail["skipped"]


def test_a_missing_library_is_named_and_the_other_files_still_run(tmp_path):
    row = pytest_row(tmp_path, {"test_a.py": PASSES, "test_b.py": NO_LIBRARY})
    assert row.status == PASSED, row.detail
    assert row.detail["passed"] == 1
    assert "no_such_library_xyz not installed" in row.detail["not_collected"]


def test_an_mmdist_import_error_in_a_gpu_test_file_fails_the_row(tmp_path):
    row = pytest_row(tmp_path, {"test_a.py": PASSES, "test_b.py": NO_MMDIST})
    assert row.status == FAILED and "test_b" in row.detail["collection_errors"], row.detail


def test_only_the_files_that_mark_gpu_tests_are_collected():
    files = {str(p.relative_to(REPO)) for p in gpu_test_files()}
    assert "tests/engine/test_watchdog.py" in files and "tests/augment/test_augment_ops.py" in files
    assert "tests/engine/test_trainer.py" not in files  # no gpu test there
    assert not any(f.startswith("tests/gpucheck/") for f in files)  # these run the check itself
