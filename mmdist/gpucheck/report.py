"""What one check found, and the table and JSON made of all of them."""

from __future__ import annotations

import json
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

PASSED, FAILED, NOT_INSTALLED, SKIPPED = "passed", "FAILED", "not installed", "skipped"


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


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def guarded(check: str, run: Callable[[], list[Row]]) -> list[Row]:
    """Run one check; a missing library is 'not installed', any other exception 'FAILED'."""
    try:
        return run()
    except ModuleNotFoundError as exc:
        return [Row(check, "-", NOT_INSTALLED, {"module": exc.name})]
    except Exception as exc:  # a check that crashes is a failed check, with its reason
        last = traceback.format_exc().strip().splitlines()[-1]
        return [Row(check, "-", FAILED, {"error": f"{type(exc).__name__}: {exc}"[:400],
                                         "at": last[:200]})]


def table(rows: list[Row]) -> str:
    head = "| check | case | status | s | detail |\n|---|---|---|---|---|"
    return "\n".join([head, *(row.line() for row in rows)])


def write(rows: list[Row], out: Path, environment: dict) -> int:
    """Write gpucheck.md and gpucheck.json under ``out``; return the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    failed = [r for r in rows if r.status == FAILED]
    text = table(rows)
    (out / "gpucheck.md").write_text(text + "\n")
    summary = {"environment": environment, "failed": len(failed),
               "passed": sum(r.status == PASSED for r in rows),
               "not_installed": sorted({r.check for r in rows if r.status == NOT_INSTALLED}),
               "rows": [asdict(r) for r in rows]}
    (out / "gpucheck.json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    print(f"gpucheck: {summary['passed']} passed, {len(failed)} failed, not installed: "
          f"{summary['not_installed'] or 'none'}; {out / 'gpucheck.json'}")
    return 1 if failed else 0
