"""What one check found (a Row), the verdict rules, and the report written as rows arrive.

A row's status comes from the assertions it made, never from the absence of an error:

- ``FAILED`` when any assertion was false (or the check crashed, hung or was killed);
- ``not run`` when none of its assertions could be made (no CUDA, a library not installed,
  "needs 2 GPUs", every pytest test skipped), with the reason in ``why``;
- ``passed`` only when at least one assertion was made and every one held.

The report is rewritten (atomically: temporary file, then rename) after every row, so a crash
of the check itself leaves gpucheck.json with every row that ended before it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

PASSED, FAILED, NOT_RUN = "passed", "FAILED", "not run"

EXIT_PASSED, EXIT_FAILED, EXIT_NOTHING_VERIFIED = 0, 1, 3
"""Exit status of ``python -m mmdist.gpucheck``: 0 every row that ran passed (some may be "not
run"); 1 some row FAILED; 3 no row ran at all (no CUDA device, say): nothing was verified, and
a job that expects a GPU check must not read that as success. 2 is a usage error (argparse)."""


@dataclass
class Row:
    check: str
    case: str
    status: str
    detail: dict = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        detail = ", ".join(f"{k}={_short(v)}" for k, v in self.detail.items())
        return f"| {self.check} | {self.case} | {self.status} | {self.seconds:.1f} | {detail} |"

    @classmethod
    def from_dict(cls, data: dict) -> "Row":
        return cls(data["check"], data["case"], data["status"], dict(data.get("detail", {})),
                   float(data.get("seconds", 0.0)))


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "/").replace("\n", " / ")
    return text if len(text) <= 200 else text[:197] + "..."


def judged(check: str, case: str, assertions: dict[str, Optional[bool]], detail: dict,
           seconds: float = 0.0, why_not_run: str = "") -> Row:
    """A row from named assertions: True held, False failed, None could not be made."""
    failed = [name for name, held in assertions.items() if held is False]
    made = [name for name, held in assertions.items() if held is not None]
    detail = dict(detail)
    if failed:
        status = FAILED
        detail["failed"] = ", ".join(failed)
    elif made:
        status = PASSED
    else:
        status = NOT_RUN
        detail["why"] = why_not_run or "none of its assertions could be made"
    detail["asserted"] = len(made)
    return Row(check, case, status, detail, seconds)


def not_run(check: str, case: str, why: str) -> Row:
    return Row(check, case, NOT_RUN, {"why": why})


def failed(check: str, case: str, why: str, **detail) -> Row:
    return Row(check, case, FAILED, {"why": why, **detail})


def exit_status(rows: list[Row]) -> int:
    if any(r.status == FAILED for r in rows):
        return EXIT_FAILED
    if not any(r.status == PASSED for r in rows):
        return EXIT_NOTHING_VERIFIED
    return EXIT_PASSED


def table(rows: list[Row]) -> str:
    head = "| check | case | status | s | detail |\n|---|---|---|---|---|"
    return "\n".join([head, *(row.line() for row in rows)])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Report:
    """gpucheck.json and gpucheck.md under ``out``, rewritten after every row."""

    def __init__(self, out: Path, environment: dict):
        self.out, self.environment, self.rows = out, environment, []
        out.mkdir(parents=True, exist_ok=True)
        self._write(finished=False)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if row.status != NOT_RUN or row.seconds:  # a progress line for what ran
            print(f"gpucheck: {row.check} / {row.case}: {row.status} ({row.seconds:.0f} s)",
                  flush=True)
        self._write(finished=False)

    def summary(self) -> dict:
        count = {s: sum(r.status == s for r in self.rows) for s in (PASSED, FAILED, NOT_RUN)}
        return {"passed": count[PASSED], "failed": count[FAILED], "not_run": count[NOT_RUN],
                "exit_status": exit_status(self.rows)}

    def _write(self, finished: bool) -> None:
        data = {"finished": finished, "environment": self.environment, **self.summary(),
                "rows": [asdict(r) for r in self.rows]}
        _atomic_write(self.out / "gpucheck.json", json.dumps(data, indent=1, default=str))
        _atomic_write(self.out / "gpucheck.md", table(self.rows) + "\n")

    def finish(self) -> int:
        """Write the final report, print the table and a one-line verdict; the exit status."""
        self._write(finished=True)
        summary = self.summary()
        print(table(self.rows))
        verdict = {EXIT_PASSED: "every check that ran passed", EXIT_FAILED: "FAILED",
                   EXIT_NOTHING_VERIFIED: "nothing was verified"}[summary["exit_status"]]
        print(f"gpucheck: {summary['passed']} passed, {summary['failed']} FAILED, "
              f"{summary['not_run']} not run: {verdict} (exit {summary['exit_status']}); "
              f"{self.out / 'gpucheck.json'}", flush=True)
        return summary["exit_status"]
