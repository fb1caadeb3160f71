"""Run each check in a child process of its own, with a timeout.

The child (``python -m mmdist.gpucheck.child``) appends one JSON line per row to a file as each
case ends; the parent reads the file while it waits and hands every new row to the report at
once. A child that exits non-zero (an exception, an abort, a kill by the out-of-memory killer)
or outlives its timeout (its whole process group is killed) becomes one FAILED row, for the first
case it had not reported; its later cases read "not run". Rows it reported before stay.

Children get an environment without any launcher's rank variables: inside a SLURM allocation of
several tasks, or under torchrun, a child would otherwise take itself for one rank of many and
wait in process-group set-up for ranks that never come.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mmdist.gpucheck.registry import Check, Context
from mmdist.gpucheck.report import Report, Row, failed, not_run

REPO = Path(__file__).resolve().parents[2]

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                  "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NPROCS",
                  "SLURM_STEP_NUM_TASKS", "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE",
                  "PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "MPI_LOCALRANKID",
                  "MPI_LOCALNRANKS")
RANK_PREFIXES = ("OMPI_COMM_WORLD_", "PMIX_")
"""What mmdist.engine.distributed.discover_ranks (and torch, MPI) read to find a rank."""

LOG_TAIL_LINES = 6


def child_env(environ: dict | None = None) -> dict:
    """The parent's environment without rank variables, with the checkout on PYTHONPATH (the
    project need not be installed)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if k not in RANK_VARIABLES and not k.startswith(RANK_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def missing_module(names: tuple[str, ...]) -> str:
    """The first of ``names`` this Python cannot import ('' when all are there)."""
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:  # a missing parent package (nvidia for nvidia.dali)
            return name
    return ""


def why_not_run(check: Check, device: str, gpus: int) -> str:
    """Why ``check`` cannot run on this machine ('' when it can)."""
    if device == "cpu" and not check.cpu_form:
        return "needs CUDA (it has no CPU form)"
    if device == "cuda" and gpus < max(1, check.gpus):
        return "no CUDA device visible" if gpus == 0 else f"needs {check.gpus} GPUs"
    missing = missing_module(check.needs)
    if missing:
        return f"{missing} not installed"
    if check.unless:
        module, function = check.unless.split(":")
        return getattr(importlib.import_module(module), function)()
    return ""


def fresh_folder(path: Path) -> Path:
    """``path`` emptied: nothing of an earlier run into the same --out is resumed or read."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _tail(log: Path) -> str:
    if not log.is_file():
        return ""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " / ".join(lines[-LOG_TAIL_LINES:])


def _how_it_ended(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"the check's process died of {name}{hint}"
    return f"the check's process exited with status {code}"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), including those in sessions of their own:
    torchrun starts its workers with start_new_session, so killing the check's process group
    alone would leave them running on the GPU."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every descendant (listed before the kill, while
    they are still its descendants)."""
    tree = descendants(pid) if Path("/proc").is_dir() else []
    for target in (pid, *tree):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the subreaper of everything it starts (Linux prctl): a rank that
    outlives the check which started it (its launcher killed on a timeout) is re-parented here
    instead of to init, so ``end_leftovers`` still finds it."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: leftovers are only killed by group
        pass


def end_leftovers(grace_s: float = 3.0) -> list[int]:
    """SIGKILL and reap whatever a finished check left running below this process (after
    ``grace_s`` for helpers that end by themselves, such as multiprocessing's resource tracker);
    the pids it had to kill."""
    if not Path("/proc").is_dir():
        return []
    deadline = time.monotonic() + grace_s
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap adopted processes that ended
                pass
        except ChildProcessError:  # no children at all
            pass
        leftovers = descendants(os.getpid())
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in leftovers:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # not our child (a grandchild its parent reaps)
            pass
    return leftovers


class RowsFile:
    """The child's rows file, read as it grows."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_rows(self) -> list[Row]:
        if not self.path.is_file():
            return []
        with self.path.open() as handle:
            handle.seek(self.offset)
            text = handle.read()
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits
        self.offset += len(complete.encode())
        return [Row.from_dict(json.loads(line)) for line in complete.splitlines() if line]


def run_check(check: Check, ctx: Context, report: Report, timeout_s: float) -> None:
    """Run ``check`` in a child process; every row it reports, or one FAILED row for a crash or
    hang, goes to ``report``."""
    work = fresh_folder(Path(ctx.work))
    rows, log = RowsFile(work / "rows.jsonl"), work / "check.log"
    command = [sys.executable, "-m", "mmdist.gpucheck.child", check.target,
               json.dumps(ctx.to_json()), str(rows.path)]
    started = time.monotonic()
    with log.open("w") as output:
        # A session of its own; on a timeout the child and everything below it is killed.
        child = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=output,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        reported: list[str] = []
        code = None
        while code is None:
            try:
                code = child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > timeout_s:
                    kill_tree(child.pid)
                    child.wait()
                    break
            finally:
                for row in rows.new_rows():
                    reported.append(row.case)
                    report.add(row)
    seconds = time.monotonic() - started
    leftovers = end_leftovers()
    left = [case for case in check.cases if case not in reported]
    if code is None:
        why = f"no result within its timeout of {timeout_s:.0f} s: killed"
    elif code != 0:
        why = _how_it_ended(code)
    elif left:
        why = "the check ended without reporting this case"
    else:
        if leftovers:  # the rows stand; the next check must not share the GPU with these
            print(f"gpucheck: {check.name}: ended {len(leftovers)} process(es) it left running",
                  flush=True)
        return
    first = left[0] if left else "-"
    report.add(Row(**{**vars(failed(check.name, first, why, log=_tail(log),
                                    log_file=str(log))), "seconds": seconds}))
    for case in left[1:]:
        report.add(not_run(check.name, case, f"the check stopped at {first!r}"))
