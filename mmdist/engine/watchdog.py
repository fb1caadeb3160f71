"""A progress watchdog that names the silent rank when a distributed job stops moving.

Under NCCL a dead or hung peer does not raise in Python: collectives are queued on the GPU, the
host blocks at the next synchronisation, and NCCL's own watchdog eventually aborts the process
with a message about a sequence number, not a rank. This thread watches progress instead:

- the training loop calls ``tick()`` after every step (and validation chunk), and the strategy
  calls ``entered(what)`` each time it enters a collective;
- every ``interval_s`` the thread publishes this rank's (collective count, heartbeat) in the
  rendezvous store and reads every other rank's;
- when this rank has not ticked for ``timeout_s``, it writes one message naming the ranks that
  stopped answering (heartbeat stale: died, stopped, node lost) or that are alive but behind
  (fewer collectives entered: hung outside a collective, e.g. in data loading), and ends the
  process with exit status 1 (``on_stall`` replaces that in tests).

The store is a separate client connection to rank 0's rendezvous store, so the thread never
shares a socket with the process group.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta
from typing import Callable, Optional

KEY = "mmdist/watchdog/{run}/{rank}"
STALL_EXIT = 1


class ProgressWatchdog:
    def __init__(self, store, rank: int, world_size: int, timeout_s: float, run_id: str = "0",
                 interval_s: Optional[float] = None,
                 on_stall: Optional[Callable[[str], None]] = None):
        self.store, self.rank, self.world_size = store, rank, world_size
        self.timeout_s = timeout_s
        self.interval_s = interval_s or max(0.2, min(5.0, timeout_s / 20))
        self.run_id = run_id
        self.on_stall = on_stall or _report_and_exit
        self.collectives = 0
        self.where = "starting"
        self.step = 0
        self._last_tick = time.monotonic()
        self._beat = 0
        self._seen: dict[int, tuple[str, float]] = {}
        """rank -> (last published value, local time it last changed)"""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---- called by the training thread (cheap: attribute writes only) ------------------------
    def tick(self, step: int) -> None:
        self.step = step
        self._last_tick = time.monotonic()

    def entered(self, what: str) -> None:
        self.collectives += 1
        self.where = what

    # ---- the thread ------------------------------------------------------------------------
    def start(self) -> "ProgressWatchdog":
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="mmdist-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1)
            self._thread = None

    def _key(self, rank: int) -> str:
        return KEY.format(run=self.run_id, rank=rank)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat += 1
            try:
                self.store.set(self._key(self.rank), f"{self.collectives} {self._beat}")
                self._read_others()
                store_error = None
            except Exception as exc:  # rank 0's store is gone with rank 0
                store_error = exc
            if time.monotonic() - self._last_tick > self.timeout_s and not self._stop.is_set():
                self.on_stall(self.diagnose(store_error))
                return

    def _read_others(self) -> None:
        now = time.monotonic()
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            key = self._key(rank)
            if not self.store.check([key]):
                continue
            value = self.store.get(key).decode()
            if self._seen.get(rank, (None, 0.0))[0] != value:
                self._seen[rank] = (value, now)

    def diagnose(self, store_error: Optional[BaseException] = None) -> str:
        """The one-paragraph report: who is silent, who is behind, where this rank waits."""
        idle = time.monotonic() - self._last_tick
        head = (f"rank {self.rank} of {self.world_size}: no progress for {idle:.0f} s "
                f"(collective timeout {self.timeout_s:g} s) after step {self.step}, waiting in "
                f"{self.where}")
        if store_error is not None:
            return (f"{head}; the rendezvous store on rank 0 is unreachable, so rank 0 died or "
                    f"its node is gone ({store_error})")
        now = time.monotonic()
        stale_after = max(3 * self.interval_s, 1.0)
        silent, behind = [], []
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            value, changed = self._seen.get(rank, (None, 0.0))
            if value is None or now - changed > stale_after:
                silent.append(rank)
            elif int(value.split()[0]) < self.collectives:
                behind.append(rank)
        parts = []
        if silent:
            parts.append(f"rank(s) {', '.join(map(str, silent))} stopped answering (no heartbeat "
                         f"for more than {stale_after:.0f} s: died, stopped, or its node is gone)")
        if behind:
            parts.append(f"rank(s) {', '.join(map(str, behind))} are alive but never reached this "
                         "collective (hung outside it: data loading, I/O, a deadlock)")
        if not parts:
            parts.append("every rank is alive and waits in the same collective, so the "
                         "collective itself is stuck (network or NCCL; TORCH_NCCL_DESYNC_DEBUG=1 "
                         "tells more)")
        return f"{head}; {'; '.join(parts)}. Resume with trainer.resume=true."


def _report_and_exit(message: str) -> None:
    print(f"mmdist: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(STALL_EXIT)  # the training thread is blocked inside C++: nothing else can end it


def connect_store(master_addr: str, master_port: int, timeout_s: float = 30.0):
    """A client connection of our own to the job's rendezvous store."""
    import torch.distributed as dist

    return dist.TCPStore(master_addr, master_port, is_master=False,
                         timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
