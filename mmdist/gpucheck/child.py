"""``python -m mmdist.gpucheck.child MODULE:FUNCTION CONTEXT_JSON ROWS_FILE``: one check.

Calls ``FUNCTION(ctx, emit)``; each ``emit(row)`` appends the row as one JSON line to ROWS_FILE
and flushes it to disk, so the parent sees it even if this process dies a moment later. Any
exception propagates (traceback in the check's log, exit status 1): the parent makes it a FAILED
row. An ImportError of mmdist itself is such a failure, never "not installed".
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import asdict

from mmdist.gpucheck.registry import Context
from mmdist.gpucheck.report import Row


def main(argv: list[str]) -> int:
    target, context, rows_path = argv
    module, function = target.split(":")
    ctx = Context(**json.loads(context))
    started = [time.monotonic()]

    def emit(row: Row) -> None:
        if not row.seconds:  # the time since the previous row: this case's own
            row.seconds = time.monotonic() - started[0]
        with open(rows_path, "a") as handle:
            handle.write(json.dumps(asdict(row), default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        started[0] = time.monotonic()

    getattr(importlib.import_module(module), function)(ctx, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
