"""The repository's gpu-marked tests, collected only from the files that hold them.

``pytest -m gpu`` over all of tests/ imports every test module, so one missing optional library
(DALI, submitit) was a collection error. Here the files are found by their ``pytest.mark.gpu``
text (tests/gpucheck itself excluded: its gpu tests run these very checks), collected with
``--continue-on-collection-errors``, and read back from pytest's JUnit XML: a file that fails to
import for want of a third-party module is "not collected" (named in the row); one that fails
on an mmdist import, a test that fails or errors, makes the row FAILED; a row whose tests all
skipped is "not run", with the skip reasons.
"""

from __future__ import annotations

import re
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from mmdist.gpucheck.common import REPO
from mmdist.gpucheck.report import Row, judged

MARK = re.compile(r"pytest\.mark\.gpu\b|marks=\[?[^\]]*pytest\.mark\.gpu")
MISSING = re.compile(r"No module named '([\w.]+)'")


def gpu_test_files(root: Path = REPO / "tests") -> list[Path]:
    """The test files that mark a test ``gpu``, tests/gpucheck excepted."""
    return sorted(p for p in root.rglob("test_*.py")
                  if "gpucheck" not in p.relative_to(root).parts[:-1]
                  and p.name != "test_gpucheck.py" and MARK.search(p.read_text()))


def read_junit(path: Path) -> dict:
    """Counts, skip reasons and collection problems from pytest's JUnit XML."""
    root = ElementTree.parse(path).getroot()
    passed, failed, skipped, missing, broken = 0, [], [], [], []
    for case in root.iter("testcase"):
        name = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        problem = case.find("error") if case.find("error") is not None else case.find("failure")
        if problem is not None:
            # pytest writes a file that failed to import as a case named after the module,
            # with no class and the message "collection failure".
            collection = problem.get("message") == "collection failure" or not case.get("classname")
            module = MISSING.search(f"{problem.get('message', '')} {problem.text or ''}")
            if collection and module and not module.group(1).startswith("mmdist"):
                missing.append(f"{name} ({module.group(1)} not installed)")
            elif collection:
                last = (problem.text or "").strip().splitlines()[-1:] or [""]
                broken.append(f"{name}: {last[0][:160]}")
            else:
                failed.append(name)
        elif case.find("skipped") is not None:
            skipped.append(f"{case.get('name')}: {case.find('skipped').get('message', '')[:100]}")
        else:
            passed += 1
    return {"passed": passed, "failed": failed, "skipped": skipped, "not_collected": missing,
            "collection_errors": broken}


def verdict(found: dict, seconds: float = 0.0) -> Row:
    ran = found["passed"] + len(found["failed"])
    return judged("gpu tests", "pytest -m gpu", {
        "no test failed": (not found["failed"]) if ran else None,
        "every gpu test file collected": (not found["collection_errors"])
        if found["collection_errors"] else None,
    }, {"passed": found["passed"], "failed_tests": "; ".join(found["failed"]),
        "skipped": "; ".join(found["skipped"]), "not_collected": "; ".join(found["not_collected"]),
        "collection_errors": "; ".join(found["collection_errors"])}, seconds,
        why_not_run="no gpu test ran (all skipped)")


def pytest_command(files: list[Path], xml: Path) -> list[str]:
    """pytest on ``files`` only, gpu-marked tests that are not slow (the one slow gpu test, the
    two-rank NCCL watchdog, is the '2 gpus' row's own check), a collection error in one file not
    stopping the others; addopts off (--strict-markers would make the timeout marks errors where
    pytest-timeout is not installed)."""
    return [sys.executable, "-m", "pytest", *map(str, files), "-m", "gpu and not slow", "-q",
            "-o", "addopts=",
            "-p", "no:cacheprovider", "--continue-on-collection-errors", f"--junitxml={xml}"]


def gpu_tests(ctx, emit) -> None:
    import subprocess

    tick = time.perf_counter()
    xml = ctx.work_dir / "gpu-tests.xml"
    done = subprocess.run(pytest_command(gpu_test_files(), xml), cwd=REPO, capture_output=True,
                          text=True, timeout=ctx.timeout_s)
    if not xml.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {done.returncode}): "
                           f"{done.stdout[-300:]} {done.stderr[-300:]}")
    emit(verdict(read_junit(xml), time.perf_counter() - tick))
