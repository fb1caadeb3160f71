"""The progress watchdog names the silent rank: dead (no heartbeat), alive but behind (never
reached the collective), or none (the collective itself is stuck); a real NCCL job where two GPUs
exist."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from mmdist.engine.watchdog import ProgressWatchdog, connect_store

TIMEOUT_S = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def store_address():
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30),
                           wait_for_workers=False)
    yield "127.0.0.1", port
    del server


def two_ranks(address, reports: dict) -> list[ProgressWatchdog]:
    return [ProgressWatchdog(connect_store(*address), rank, 2, TIMEOUT_S, run_id="t",
                             interval_s=0.1, on_stall=lambda m, r=rank: reports.setdefault(r, m))
            for rank in range(2)]


def wait_for(reports: dict, rank: int, limit_s: float) -> float:
    tick = time.monotonic()
    while rank not in reports:
        assert time.monotonic() - tick < limit_s, "the watchdog never reported"
        time.sleep(0.05)
    return time.monotonic() - tick


def test_a_rank_without_heartbeat_is_named_as_stopped(store_address):
    reports: dict = {}
    zero, one = two_ranks(store_address, reports)
    zero.start(), one.start()
    for step in range(3):  # both train a little
        for watchdog in (zero, one):
            watchdog.entered("the gradient all-reduce")
            watchdog.tick(step + 1)
        time.sleep(0.2)
    one.stop()  # rank 1 dies
    zero.entered("the gradient all-reduce")  # rank 0 waits for it in the next collective
    waited = wait_for(reports, 0, TIMEOUT_S + 3)
    zero.stop()
    message = reports[0]
    assert waited < TIMEOUT_S + 1
    assert message.startswith("rank 0 of 2: no progress for") and "after step 3" in message
    assert "waiting in the gradient all-reduce" in message
    assert "rank(s) 1 stopped answering" in message


def test_a_live_rank_that_never_reaches_the_collective_is_named_as_behind(store_address):
    reports: dict = {}
    zero, one = two_ranks(store_address, reports)
    zero.start(), one.start()
    zero.entered("an all-reduce"), one.entered("an all-reduce")
    zero.entered("a barrier")  # rank 1 hangs before it, e.g. in data loading
    wait_for(reports, 0, TIMEOUT_S + 3)
    wait_for(reports, 1, TIMEOUT_S + 3)
    zero.stop(), one.stop()
    assert "rank(s) 1 are alive but never reached this collective" in reports[0]
    assert "stopped answering" not in reports[0]
    # Rank 1 sees rank 0 ahead of it, alive: nobody it waits for is silent.
    assert "every rank is alive" in reports[1]


def test_progress_keeps_the_watchdog_quiet(store_address):
    reports: dict = {}
    zero, one = two_ranks(store_address, reports)
    zero.start(), one.start()
    deadline = time.monotonic() + 2 * TIMEOUT_S
    step = 0
    while time.monotonic() < deadline:
        step += 1
        for watchdog in (zero, one):
            watchdog.tick(step)
        time.sleep(0.1)
    zero.stop(), one.stop()
    assert reports == {}


def test_an_unreachable_store_means_rank_0_died():
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=5),
                           wait_for_workers=False)
    reports: dict = {}
    watchdog = ProgressWatchdog(connect_store("127.0.0.1", port, timeout_s=1), 1, 2, TIMEOUT_S,
                                interval_s=0.1, on_stall=lambda m: reports.setdefault(1, m))
    watchdog.start()
    del server  # rank 0's process, and its store, are gone
    wait_for(reports, 1, TIMEOUT_S + 5)
    watchdog.stop()
    assert "rendezvous store on rank 0 is unreachable" in reports[1]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nccl_job_with_a_killed_rank_fails_within_the_timeout_naming_it(tmp_path):
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs (one NCCL rank each)")
    from test_distributed_failure import TIMEOUT_S as JOB_TIMEOUT_S
    from test_distributed_failure import two_ranks, wait_for_checkpoint

    run_dir = tmp_path / "run"
    with two_ranks(run_dir, tmp_path, "engine.device=cuda") as (ranks, logs):
        wait_for_checkpoint(run_dir, 2, ranks, logs[0], limit_s=200)
        ranks[1].kill()
        killed = time.monotonic()
        code = ranks[0].wait(timeout=JOB_TIMEOUT_S + 60)
        waited = time.monotonic() - killed
    text = logs[0].read_text()
    assert code != 0 and waited < JOB_TIMEOUT_S + 15, (waited, text[-3000:])
    assert "rank 0 of 2" in text and "rank(s) 1 stopped answering" in text, text[-3000:]
