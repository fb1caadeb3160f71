"""What the trainer asks of the other ranks, for every strategy: a sum, a gather, a barrier, and
the progress watchdog.

One process (mmdist.engine.single) needs none of it: ``OneProcessCollectives`` returns its input.
DDP and DeepSpeed (mmdist.engine.ddp, mmdist.engine.deepspeed_strategy) each hold a
``ProcessGroupCollectives`` over the default process group, which also guards their own
gradient reduction (``guarded``): a collective that fails becomes a ``CollectiveError`` naming
the ranks that stopped answering, and while the training loop runs (``watching``) a watchdog
(mmdist.engine.watchdog) reports one that never returns, which NCCL does not.
"""

from __future__ import annotations

import contextlib
import itertools
import time

import torch
import torch.distributed as dist

from mmdist.engine.distributed import RankInfo, destroy_distributed
from mmdist.engine.watchdog import ProgressWatchdog, connect_store

_WATCH_RUNS = itertools.count()
"""Numbers the training loops of this process; every rank counts the same, so the watchdog's
keys of one loop never meet those of another on the same store."""


class CollectiveError(RuntimeError):
    """A collective failed or timed out: another rank died or hangs. The message names ranks."""


class CollectiveGuard:
    """Turns a failed collective into a CollectiveError that says which ranks stopped answering.

    After a failure every surviving rank checks in under a fresh key in the rendezvous store
    (hosted by rank 0) and waits a few seconds for the others; the ranks that never check in are
    the dead or hung ones. If the store itself is gone, rank 0 is the one that died.
    """

    def __init__(self, info: RankInfo, timeout_s: float):
        self.info, self.timeout_s = info, timeout_s

    def fail(self, what: str, exc: BaseException) -> CollectiveError:
        rank, world = self.info.rank, self.info.world_size
        head = (f"rank {rank} of {world}: {what} failed (collective timeout "
                f"{self.timeout_s:g} s)")
        try:
            store = dist.distributed_c10d._get_default_store()
            store.set(f"mmdist/alive/{rank}", "1")
            deadline = time.monotonic() + min(5.0, self.timeout_s)
            missing = list(range(world))
            while missing and time.monotonic() < deadline:
                missing = [r for r in range(world) if not store.check([f"mmdist/alive/{r}"])]
                time.sleep(0.1)
        except Exception:  # the store lives in rank 0's process
            return CollectiveError(f"{head}; the rendezvous store on rank 0 "
                                   f"({self.info.master_addr}:{self.info.master_port}) is "
                                   f"unreachable, so rank 0 died. Cause: {exc}")
        if missing:
            who = ", ".join(str(r) for r in missing)
            return CollectiveError(f"{head}; rank(s) {who} stopped answering (died or hang). "
                                   f"Cause: {exc}")
        return CollectiveError(f"{head}; every rank is alive, so the collective itself failed. "
                               f"Cause: {exc}")


class OneProcessCollectives:
    """The collectives of a job of one rank: each returns its input."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def progress(self, step: int) -> None:
        pass

    def watching(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class ProcessGroupCollectives:
    """One rank's collectives on the default process group (started by
    mmdist.engine.distributed.init_distributed), each failure reported by rank."""

    def __init__(self, info: RankInfo, device: torch.device, timeout_s: float):
        self.info, self.device, self.timeout_s = info, device, timeout_s
        self.guard = CollectiveGuard(info, timeout_s)
        self.watchdog: ProgressWatchdog | None = None

    @contextlib.contextmanager
    def guarded(self, what: str):
        """Run one collective (``what`` names it in messages): the watchdog learns where this
        rank waits, and a RuntimeError becomes a CollectiveError naming the silent ranks."""
        if self.watchdog is not None:
            self.watchdog.entered(what)
        try:
            yield
        except RuntimeError as exc:
            raise self.guard.fail(what, exc) from exc

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        with self.guarded("an all-reduce"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order (picklable objects)."""
        out = [None] * self.info.world_size
        with self.guarded("an all-gather"):
            dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        with self.guarded("a barrier"):
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    # ---- progress watchdog --------------------------------------------------------------------
    def progress(self, step: int) -> None:
        if self.watchdog is not None:
            self.watchdog.tick(step)

    @contextlib.contextmanager
    def watching(self):
        """Run the progress watchdog (mmdist.engine.watchdog) while the training loop runs."""
        store = connect_store(self.info.master_addr, self.info.master_port)
        self.watchdog = ProgressWatchdog(store, self.info.rank, self.info.world_size,
                                         self.timeout_s, run_id=str(next(_WATCH_RUNS))).start()
        try:
            yield self.watchdog
        finally:
            self.watchdog.stop()
            self.watchdog = None

    def close(self) -> None:
        """Destroy the process group. Whatever holds it (DDP's reducer, DeepSpeed's engine) must
        be released first: the other order can abort a rank in C++ at exit."""
        destroy_distributed()
