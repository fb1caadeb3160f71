"""DistributedDataParallel: one process per rank, gradients averaged in the backward.

The saliency bridge needs no special handling here because the model computes it inside its
own forward with ``torch.autograd.grad`` on the input (mmdist.model.saliency): DDP sees one
forward and one backward per step, and the result equals one process on the concatenated
global batch (tests/engine/test_ddp_gradients.py). Two DDP options are deliberately fixed:

- ``static_graph`` is never used: with the double-backward saliency it gives silently wrong
  gradients at the first iteration and raises at the second.
- ``find_unused_parameters`` costs a graph traversal per step, so 'auto' turns it on only when
  a probe step on the bare model leaves some parameter without a gradient.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmdist.engine.distributed import RankInfo, init_distributed
from mmdist.engine.single import Strategy
from mmdist.engine.watchdog import ProgressWatchdog, connect_store

_WATCH_RUNS = itertools.count()
"""Numbers the training loops of this process; every rank counts the same, so the watchdog's
keys of one loop never meet those of another on the same store."""


class CollectiveError(RuntimeError):
    """A collective failed or timed out: another rank died or hangs. The message names ranks."""


def unused_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that one training step of the model's variant leaves without a
    gradient, found by a probe step (2 random 32 px images per stream, default losses) on the
    bare model. The global RNG state is restored afterwards, so the probe changes nothing."""
    from mmdist.config import LossConfig
    from mmdist.data.step_batch import StepBatch
    from mmdist.engine.step import training_losses

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(0)
    batch = StepBatch()
    for name in model.spec.streams:
        setattr(batch, name, torch.rand(2, 1, 32, 32, generator=generator, dtype=dtype) * 2 - 1)
    if batch.seg_labeled is not None:
        batch.seg_labeled_mask = (torch.rand(2, 1, 32, 32, generator=generator) > 0.5).to(dtype)
    if batch.cls_labeled is not None:
        batch.cls_labeled_target = torch.tensor([0, 1])
    saved = [p.grad for p in model.parameters()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.zero_grad(set_to_none=True)
        loss, _ = training_losses(model, batch.to(device), model.spec, LossConfig(), step=1)
        loss.backward()
        unused = [name for name, p in model.named_parameters()
                  if p.requires_grad and p.grad is None]
    for param, grad in zip(model.parameters(), saved):
        param.grad = grad
    return unused


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


class DDPStrategy(Strategy):
    """One rank of a DDP job. The launcher's variables say which (mmdist.engine.distributed)."""

    def __init__(self, engine_config, info: RankInfo | None = None):
        self.info = init_distributed(engine_config, info)
        self.rank, self.world_size = self.info.rank, self.info.world_size
        self.local_rank, self.local_world_size = self.info.local_rank, self.info.local_world_size
        super().__init__(engine_config)
        self.guard = CollectiveGuard(self.info, engine_config.collective_timeout_s)
        self.wrapped: DistributedDataParallel | None = None
        self.find_unused = False
        self.watchdog: ProgressWatchdog | None = None

    @property
    def name(self) -> str:
        return "ddp"

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.model, self.optimizer = model.to(self.device), optimizer
        choice = self.config.find_unused_parameters
        if choice == "auto":
            self.find_unused = bool(unused_parameters(self.model))
        else:
            self.find_unused = choice == "true"
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # gradient_as_bucket_view: the gradients live in DDP's reduction buckets instead of
        # being copied into them after each backward (measured on 2 CPU ranks: exposed
        # communication 6% -> 2% of the step).
        self.wrapped = DistributedDataParallel(self.model, device_ids=device_ids,
                                               find_unused_parameters=self.find_unused,
                                               gradient_as_bucket_view=True)
        return self.wrapped

    # ---- the step (split so tests and benchmarks can look at the averaged gradients) ----------
    def backward(self, loss: torch.Tensor) -> None:
        """Backward with the gradient all-reduce (DDP's hooks average over ranks)."""
        self._entering("the gradient all-reduce")
        try:
            self.scaler.scale(loss).backward()
        except RuntimeError as exc:
            raise self.guard.fail("the gradient all-reduce", exc) from exc

    def gradients(self) -> dict[str, torch.Tensor]:
        """The averaged gradients after ``backward`` (before ``optimizer_step``), by name."""
        return {name: p.grad.detach().clone(memory_format=torch.contiguous_format)
                for name, p in self.model.named_parameters() if p.grad is not None}

    # ---- progress watchdog --------------------------------------------------------------------
    def _entering(self, what: str) -> None:
        if self.watchdog is not None:
            self.watchdog.entered(what)

    def progress(self, step: int) -> None:
        if self.watchdog is not None:
            self.watchdog.tick(step)

    @contextlib.contextmanager
    def watching(self):
        """Run the progress watchdog (mmdist.engine.watchdog) while the training loop runs."""
        store = connect_store(self.info.master_addr, self.info.master_port)
        self.watchdog = ProgressWatchdog(store, self.rank, self.world_size,
                                         self.config.collective_timeout_s,
                                         run_id=str(next(_WATCH_RUNS))).start()
        try:
            yield self.watchdog
        finally:
            self.watchdog.stop()
            self.watchdog = None

    # ---- collectives ------------------------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        self._entering("an all-reduce")
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except RuntimeError as exc:
            raise self.guard.fail("an all-reduce", exc) from exc
        return tensor

    def all_gather_object(self, obj) -> list:
        self._entering("an all-gather")
        out = [None] * self.world_size
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as exc:
            raise self.guard.fail("an all-gather", exc) from exc
        return out

    def barrier(self) -> None:
        self._entering("a barrier")
        try:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()
        except RuntimeError as exc:
            raise self.guard.fail("a barrier", exc) from exc

    def close(self) -> None:
        """Release the DDP wrapper (its reducer holds the process group), then the group: the
        other order can abort a rank in C++ at exit (seen in bench/ddp.py), turning exit 3
        (preempted, requeued by slurm/train.sh) into 134. The caller drops its own references
        to the wrapped model first (Trainer.close)."""
        self.wrapped = self.model = self.optimizer = None
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()

