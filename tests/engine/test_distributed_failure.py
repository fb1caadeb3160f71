"""A rank killed mid-run makes the others fail fast with a message naming it; the run then
resumes from its last checkpoint and completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_distributed_launchers import REPO, check_completed_run, launch_env, run_launcher

TIMEOUT_S = 20


def start_rank(rank: int, port: int, run_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    """One rank started by hand through the generic RANK/WORLD_SIZE variables, so no launcher
    supervises it: what stops the survivor is mmdist's own collective timeout and report."""
    env = dict(launch_env(), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    command = [sys.executable, "-m", "mmdist.train", "--config", "configs/tiny.yaml",
               f"output_dir={run_dir}", "engine.strategy=ddp", "trainer.max_steps=200",
               "trainer.checkpoint_every=2", "trainer.image_log_every=0",
               f"engine.collective_timeout_s={TIMEOUT_S}", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def two_ranks(run_dir: Path, log_dir: Path, *extra: str):
    """Two ranks of one job started by hand (start_rank); both killed when the block ends.
    Yields (processes, logs)."""
    port = free_port()
    logs = [log_dir / f"rank{r}.log" for r in range(2)]
    ranks = [start_rank(r, port, run_dir, logs[r], *extra) for r in range(2)]
    try:
        yield ranks, logs
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for_checkpoint(run_dir: Path, step: int, ranks, log: Path, limit_s: float = 300):
    """Until the job has written checkpoint ``step`` (both ranks still alive)."""
    path = run_dir / "checkpoints" / f"step_{step:08d}.pt"
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        assert all(p.poll() is None for p in ranks), log.read_text()[-3000:]
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_rank_fails_fast_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    with two_ranks(run_dir, tmp_path) as (ranks, logs):
        wait_for_checkpoint(run_dir, 2, ranks, logs[0])
        ranks[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code = ranks[0].wait(timeout=TIMEOUT_S + 60)
        waited = time.monotonic() - killed_at
    text = logs[0].read_text()
    assert code != 0, text[-3000:]
    assert waited < TIMEOUT_S + 30, waited
    assert "rank 0 of 2" in text and "rank(s) 1 stopped answering" in text, text[-3000:]
    assert not (run_dir / "summary.json").exists()

    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))
    last = int(saved[-1][5:13])
    assert last < 200
    done = run_launcher("torchrun.sh", run_dir, f"trainer.max_steps={last + 2}",
                        "trainer.checkpoint_every=2", "trainer.resume=true")
    summary = check_completed_run(done, run_dir, steps=last + 2)
    assert summary["start_step"] == last


def _hang_worker(rank: int, port: int, out_dir: str) -> None:
    import torch

    from mmdist.config import EngineConfig
    from mmdist.engine.collectives import CollectiveError
    from mmdist.engine.ddp import DDPStrategy
    from mmdist.engine.distributed import RankInfo

    torch.set_num_threads(1)
    strategy = DDPStrategy(EngineConfig(strategy="ddp", device="cpu", collective_timeout_s=3),
                           info=RankInfo(rank, 2, rank, "127.0.0.1", port, "test"))
    strategy.all_reduce_sum(torch.ones(1))
    if rank == 1:
        time.sleep(12)  # hangs: alive, but never reaches the next collective
        os._exit(0)
    tick = time.monotonic()
    try:
        strategy.all_reduce_sum(torch.ones(1))
        message = "no error"
    except CollectiveError as exc:
        message = str(exc)
    Path(out_dir, "rank0.json").write_text(json.dumps({"message": message,
                                                       "seconds": time.monotonic() - tick}))
    os._exit(0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hung_rank_times_out_and_is_named(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_hang_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert "rank 0 of 2" in got["message"] and "rank(s) 1 stopped answering" in got["message"], got
    assert 3 <= got["seconds"] < 3 + 5 + 5, got  # the timeout, the check-in wait, slack
