"""The interface every strategy has, and what the torch strategies share.

The trainer talks to a Strategy only: it hands over the model and optimizer once (``setup``,
told by the trainer whether some parameter may get no gradient), then calls
``backward_step(loss)`` each step, the collectives for metrics, RNG states and the stop
agreement, and ``progress(step)`` so a distributed strategy's watchdog can tell a stuck job from
a slow one. The collectives are a part each strategy holds (mmdist.engine.collectives); the
default step here is torch's optimizer with its GradScaler, and a checkpoint is one file
written by rank 0. The strategies: one process (mmdist.engine.single), DDP (mmdist.engine.ddp)
and DeepSpeed (mmdist.engine.deepspeed_strategy), picked by mmdist.engine.strategies.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mmdist.engine import checkpoint as ckpt
from mmdist.engine.checkpointer import StateFns
from mmdist.engine.collectives import OneProcessCollectives, ProcessGroupCollectives
from mmdist.engine.devices import resolve_device, synchronize
from mmdist.engine.distributed import RankInfo
from mmdist.engine.precision import grad_scaler


def poisoned_if_not_finite(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` itself when finite; else ``loss * NaN``, whose backward makes every gradient NaN
    (even those a 0 * inf would have left finite). No host sync."""
    finite = torch.isfinite(loss.detach())
    return loss * torch.where(finite, 1.0, float("nan")).to(loss.dtype)


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite: torch's fused AMP check (the
    one GradScaler runs, at scale 1) per device, then one host read."""
    grads: dict[tuple, list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                grads.setdefault((param.grad.device, param.grad.dtype), []).append(param.grad)
    if not grads:
        return True
    found = []
    for (device, _), tensors in grads.items():
        flag = torch.zeros(1, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, flag,
                                                         torch.ones(1, device=device))
        found.append(flag)
    first = found[0].device
    return not bool(torch.cat([flag.to(first) for flag in found]).sum())


class Strategy:
    """One rank of a job (the only one, for one process). Subclasses say how the model is
    wrapped and which collectives join the ranks (``self.collectives``, set in their
    ``__init__``); DeepSpeed also replaces the step and the checkpoint files."""

    rank = 0
    world_size = 1
    local_rank = 0
    local_world_size = 1
    collectives: OneProcessCollectives | ProcessGroupCollectives  # set by every subclass

    def __init__(self, engine_config, info: RankInfo | None = None):
        if info is not None:  # a rank of a launched job (mmdist.engine.distributed)
            self.info = info
            self.rank, self.world_size = info.rank, info.world_size
            self.local_rank, self.local_world_size = info.local_rank, info.local_world_size
        self.config = engine_config
        self.device = resolve_device(engine_config.device, self.local_rank,
                                     self.local_world_size)
        self.precision = engine_config.precision
        self.scaler = grad_scaler(self.device, self.precision)
        self.skipped_steps = 0
        self._last_scale: float | None = None
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              find_unused_parameters: bool = False) -> nn.Module:
        """Move the model to the device and return what the step should call.
        ``find_unused_parameters``: some parameter may get no gradient in a step (the trainer
        decides, from the variant; only DDP has to know)."""
        self.model, self.optimizer = model.to(self.device), optimizer
        return self.model

    def unwrap(self) -> nn.Module:
        return self.model

    def backward_step(self, loss: torch.Tensor) -> bool:
        """Backward, (unscale,) optimizer step, zero grads. Returns False when the step was
        skipped (counted in ``skipped_steps``): fp16 overflow, or a non-finite loss, saliency or
        gradient on any rank. A non-finite loss poisons every gradient of its rank, so the
        gradient all-reduce that runs anyway carries the news to every rank and all skip the
        same step (no extra collective, no rank left waiting)."""
        self.backward(poisoned_if_not_finite(loss))
        return self.optimizer_step()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def optimizer_step(self) -> bool:
        if self.scaler.is_enabled():
            # GradScaler skips a step with inf/NaN gradients and backs its scale off; that is
            # the one host read of the step (the previous scale is remembered, not read again).
            if self._last_scale is None:
                self._last_scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = self.scaler.get_scale()
            stepped = scale >= self._last_scale
            self._last_scale = scale
        else:
            stepped = gradients_finite(self.optimizer)  # one host read
            if stepped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += int(not stepped)
        return stepped

    def synchronize(self) -> None:
        """Wait for this rank's queued device work (timers call it before reading the clock)."""
        synchronize(self.device)

    # ---- collectives (mmdist.engine.collectives) ---------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``tensor``, in place."""
        return self.collectives.all_reduce_sum(tensor)

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order (picklable objects)."""
        return self.collectives.all_gather_object(obj)

    def barrier(self) -> None:
        self.collectives.barrier()

    def progress(self, step: int) -> None:
        """The loop finished ``step`` (or a validation chunk): the job is not stuck."""
        self.collectives.progress(step)

    def watching(self) -> contextlib.AbstractContextManager:
        """Arm the progress watchdog (distributed strategies) for the training loop."""
        return self.collectives.watching()

    # ---- checkpoints (what a checkpoint holds: mmdist.engine.checkpointer) -----------------
    def checkpoint_parts(self) -> dict[str, tuple[object, dict]]:
        """{name: (part, Checkpointer.register options)}: this strategy's state in a checkpoint."""
        return {"model": (self.unwrap(), {}), "optimizer": (self.optimizer, {}),
                "scaler": (StateFns(self.scaler.state_dict, self._load_scaler), {"optional": True}),
                "skipped_steps": (StateFns(lambda: self.skipped_steps, self._load_skipped),
                                  {"optional": True})}

    def _load_scaler(self, state) -> None:
        if state:  # a disabled scaler saves {}, which an enabled one refuses
            self.scaler.load_state_dict(state)
        self._last_scale = None

    def _load_skipped(self, count) -> None:
        self.skipped_steps = int(count)

    def write_checkpoint(self, run_dir, step: int, state: dict, keep: int) -> None:
        """Rank 0 writes ``state`` in one torch.save, atomically; the others wait."""
        if self.is_main:
            ckpt.save_checkpoint(run_dir, step, state, keep=keep)
        self.barrier()

    def restore_files(self, state: dict, path) -> dict:
        """Read whatever a checkpoint keeps beside its .pt (nothing here); the state to load."""
        return state

    def checkpoints_newest_first(self, run_dir) -> list:
        """The run's checkpoints this strategy can resume from, newest first."""
        return [path for _, path in reversed(ckpt.list_checkpoints(run_dir))]

    def latest_checkpoint(self, run_dir):
        found = self.checkpoints_newest_first(run_dir)
        return found[0] if found else None

    def close(self) -> None:
        """End the collectives. A strategy whose wrapper holds the process group releases it
        first (DDP, DeepSpeed); the bare model stays readable here."""
        self.collectives.close()
