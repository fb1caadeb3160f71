"""The GPU check's machinery on the CPU, for real: each check in a child process (crash, hang,
broken import), rows in the JSON as they end, verdicts and exit status, fresh folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmdist.gpucheck.__main__ import main
from mmdist.gpucheck.registry import CHECKS, ONE_GPU_BUDGET_S, Check
from mmdist.gpucheck.report import (EXIT_FAILED, EXIT_NOTHING_VERIFIED, EXIT_PASSED, FAILED,
                                    NOT_RUN, PASSED, exit_status, judged)
from mmdist.gpucheck.runner import why_not_run

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(autouse=True)
def probes_importable(monkeypatch):
    """The children import gpucheck_probes from this folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def probe(function: str, cases: tuple[str, ...], timeout_s: float = 60, **kwargs) -> Check:
    return Check(function, f"gpucheck_probes:{function}", timeout_s, cases,
                 cpu_timeout_s=timeout_s, **kwargs)


def run(out: Path, *checks: Check, argv=()) -> tuple[int, dict]:
    code = main(["--out", str(out), "--device", "cpu", *argv], checks=checks)
    return code, json.loads((out / "gpucheck.json").read_text())


def statuses(report: dict) -> dict:
    return {(r["check"], r["case"]): r["status"] for r in report["rows"]}


def test_a_failed_row_makes_the_exit_status_non_zero(tmp_path):
    code, report = run(tmp_path, probe("passes", ("passes",)), probe("fails", ("fails",)))
    assert statuses(report) == {("probe", "passes"): PASSED, ("probe", "fails"): FAILED}
    assert code == report["exit_status"] == EXIT_FAILED
    code, _ = run(tmp_path / "good", probe("passes", ("passes",)))
    assert code == EXIT_PASSED


def test_a_row_none_of_whose_assertions_ran_is_not_run_never_passed():
    row = judged("x", "y", {"a": None, "b": None}, {}, why_not_run="every test skipped")
    assert (row.status, row.detail["why"]) == (NOT_RUN, "every test skipped")
    assert judged("x", "y", {}, {}).status == NOT_RUN
    assert judged("x", "y", {"a": True, "b": None}, {}).status == PASSED
    assert judged("x", "y", {"a": True, "b": False}, {}).status == FAILED
    assert exit_status([row]) == EXIT_NOTHING_VERIFIED  # nothing verified is not success


def test_a_crash_and_a_hang_are_one_failed_row_each_and_the_later_checks_still_run(tmp_path):
    started = time.monotonic()
    code, report = run(tmp_path,
                       probe("crashes", ("before", "after")),
                       probe("hangs", ("before", "after", "later"), timeout_s=4),
                       probe("passes", ("passes",)))
    assert time.monotonic() - started < 60
    rows = {(r["check"], r["case"]): r for r in report["rows"]}
    assert rows["crash", "before"]["status"] == PASSED  # reported before the abort: kept
    assert rows["crashes", "after"]["status"] == FAILED
    assert "SIGABRT" in rows["crashes", "after"]["detail"]["why"]
    assert rows["hang", "before"]["status"] == PASSED
    assert rows["hangs", "after"]["status"] == FAILED
    assert "timeout of 4 s" in rows["hangs", "after"]["detail"]["why"]
    assert rows["hangs", "later"]["status"] == NOT_RUN
    assert rows["probe", "passes"]["status"] == PASSED
    assert code == EXIT_FAILED and report["finished"]
    # The hanging check read gpucheck.json while it ran: the crash's rows were already there.
    seen = json.loads((tmp_path / "work" / "hangs" / "seen.json").read_text())
    assert seen == ["before", "after"]


def worker_ended(folder: Path) -> bool:
    worker = int((folder / "worker.pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stat = Path(f"/proc/{worker}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_check_leaves_no_process_behind_not_even_one_in_its_own_session(tmp_path):
    code, report = run(tmp_path, probe("hangs_with_a_worker", ("case",), timeout_s=4),
                       probe("leaves_a_worker", ("case",)))
    assert statuses(report) == {("hangs_with_a_worker", "case"): FAILED,
                                ("leaves", "case"): PASSED}
    assert worker_ended(tmp_path / "work" / "hangs_with_a_worker")
    assert worker_ended(tmp_path / "work" / "leaves_a_worker")


def test_a_process_killed_like_by_the_oom_killer_is_a_failed_row_saying_so(tmp_path):
    code, report = run(tmp_path, probe("killed", ("case",)), probe("passes", ("passes",)))
    rows = report["rows"]
    assert [r["status"] for r in rows] == [FAILED, PASSED]
    assert "SIGKILL (the out-of-memory killer sends SIGKILL)" in rows[0]["detail"]["why"]
    assert code == EXIT_FAILED


def test_two_gpu_rows_say_needs_2_gpus_on_a_one_gpu_machine():
    two = [c for c in CHECKS if c.gpus == 2]
    assert len(two) == 3
    assert {why_not_run(c, "cuda", 1) for c in two} == {"needs 2 GPUs"}
    assert {why_not_run(c, "cuda", 0) for c in two} == {"no CUDA device visible"}


def test_an_mmdist_import_error_is_failed_not_not_installed(tmp_path):
    code, report = run(tmp_path, probe("imports_missing_mmdist_module", ("import",)),
                       Check("module", "mmdist.gpucheck.no_such_check:run", 30, ("import",)))
    rows = {r["check"]: r for r in report["rows"]}
    assert rows["imports_missing_mmdist_module"]["status"] == FAILED
    assert "No module named 'mmdist.no_such_module'" in \
        rows["imports_missing_mmdist_module"]["detail"]["log"]
    assert rows["module"]["status"] == FAILED
    assert code == EXIT_FAILED


def test_a_missing_third_party_library_is_not_run_and_says_which(tmp_path):
    code, report = run(tmp_path, probe("passes", ("passes",), needs=("no_such_library_xyz",)))
    assert [(r["status"], r["detail"]["why"]) for r in report["rows"]] == [
        (NOT_RUN, "no_such_library_xyz not installed")]
    assert code == EXIT_NOTHING_VERIFIED


def test_a_second_run_into_the_same_out_starts_from_empty_folders(tmp_path):
    for _ in range(2):
        code, report = run(tmp_path, probe("starts_fresh", ("empty folder",)))
        assert code == EXIT_PASSED, report["rows"]


def test_children_never_see_the_rank_variables_of_an_allocation(tmp_path, monkeypatch):
    for name, value in (("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "2"),
                        ("RANK", "2"), ("WORLD_SIZE", "4"), ("MASTER_PORT", "29400")):
        monkeypatch.setenv(name, value)
    code, report = run(tmp_path, probe("rank_environment", ("one process",)))
    assert code == EXIT_PASSED, report["rows"]


def test_no_check_starts_once_the_budget_is_spent_and_a_running_one_is_cut(tmp_path):
    started = time.monotonic()
    code, report = run(tmp_path, probe("hangs", ("before", "after"), timeout_s=60),
                       probe("passes", ("passes",)), argv=["--budget-s", "3"])
    assert time.monotonic() - started < 30
    rows = {(r["check"], r["case"]): r for r in report["rows"]}
    assert rows["hangs", "after"]["status"] == FAILED
    assert rows["passes", "passes"]["status"] == NOT_RUN  # not started: the registry's name
    assert "budget" in rows["passes", "passes"]["detail"]["why"]


def test_the_checks_of_one_gpu_fit_six_minutes_even_if_each_hangs():
    one_gpu = [c for c in CHECKS if c.gpus <= 1]
    assert sum(c.timeout_s for c in one_gpu) <= ONE_GPU_BUDGET_S == 360
    assert [c.name for c in one_gpu][:2] == ["gradients", "steps"]  # the most telling first
    assert {c.cases[0] for c in CHECKS if c.gpus == 2} == {
        "ddp gradients = 1 process", "per-rank RNG resume", "NCCL watchdog"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without CUDA")
def test_without_cuda_every_gpu_row_reads_not_run_and_the_exit_says_nothing_verified(tmp_path):
    # As `make gpu-check` runs it: the checkout on PYTHONPATH, the default device (cuda).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mmdist.gpucheck", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_NOTHING_VERIFIED, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpucheck.json").read_text())
    expected = {(c.name, case) for c in CHECKS for case in c.cases}
    assert set(statuses(report)) == expected
    assert set(statuses(report).values()) == {NOT_RUN}
    assert "nothing was verified (exit 3)" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_real_check_in_its_cpu_form_passes_twice_into_the_same_out(tmp_path):
    # The trainer check (bf16, EMA, validation, best.pt) in its child process, twice: the
    # second run must not find the first one's checkpoints.
    for _ in range(2):
        code, report = run(tmp_path, *[c for c in CHECKS if c.name == "trainer"])
        assert code == EXIT_PASSED, report["rows"]
        assert statuses(report) == {("trainer", "single bf16 ema+val+best"): PASSED,
                                    ("trainer", "single fp16 ema+val+best"): NOT_RUN}


def test_a_broken_precondition_is_a_failed_row_and_the_next_check_runs(tmp_path):
    code, report = run(tmp_path, probe("passes", ("passes",), unless="mmdist.no_such_module:f"),
                       probe("passes", ("passes",)))
    assert [r["status"] for r in report["rows"]] == [FAILED, PASSED]
    assert "No module named 'mmdist.no_such_module'" in report["rows"][0]["detail"]["why"]
    assert code == EXIT_FAILED
