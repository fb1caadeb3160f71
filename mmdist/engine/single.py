"""The one-process strategy (CPU or one GPU), and the interface every strategy has.

The trainer talks to a Strategy only: it hands over the model and optimizer once (``setup``),
then calls ``backward_step(loss)`` each step, the collective helpers for metrics, RNG states and
the stop agreement, and ``progress(step)`` so a distributed strategy's watchdog can tell a stuck
job from a slow one. DDP and DeepSpeed (mmdist.engine.ddp, mmdist.engine.deepspeed_strategy)
override what differs across ranks; mmdist.engine.strategies picks one.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mmdist.engine import checkpoint as ckpt
from mmdist.engine.devices import resolve_device, synchronize
from mmdist.engine.precision import grad_scaler


class Strategy:
    """One process, CPU or one GPU. Subclasses override what differs across ranks."""

    rank = 0
    world_size = 1
    local_rank = 0
    local_world_size = 1

    def __init__(self, engine_config):
        self.config = engine_config
        self.device = resolve_device(engine_config.device, self.local_rank)
        self.precision = engine_config.precision
        self.scaler = grad_scaler(self.device, self.precision)
        self.skipped_steps = 0
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def name(self) -> str:
        return "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Move the model to the device and return what the step should call."""
        self.model, self.optimizer = model.to(self.device), optimizer
        return self.model

    def unwrap(self) -> nn.Module:
        return self.model

    def backward_step(self, loss: torch.Tensor) -> bool:
        """Backward, (unscale,) optimizer step, zero grads. Returns False when fp16 overflow made
        the GradScaler skip the update (counted in ``skipped_steps``)."""
        self.backward(loss)
        return self.optimizer_step()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def optimizer_step(self) -> bool:
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        stepped = scale_before is None or self.scaler.get_scale() >= scale_before
        self.skipped_steps += int(not stepped)
        return stepped

    def synchronize(self) -> None:
        """Wait for this rank's queued device work (timers call it before reading the clock)."""
        synchronize(self.device)

    # ---- collectives (identity for one process) ------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order (picklable objects)."""
        return [obj]

    def barrier(self) -> None:
        pass

    # ---- progress watchdog (distributed strategies only) ------------------------------------
    def progress(self, step: int) -> None:
        """The loop finished ``step`` (or a validation chunk): the job is not stuck."""

    def watching(self) -> contextlib.AbstractContextManager:
        """Arm the watchdog for the duration of the training loop."""
        return contextlib.nullcontext()

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, run_dir, step: int, extra_state: dict, keep: int) -> None:
        """Rank 0 writes model/optimizer/scaler + ``extra_state`` atomically; the others wait."""
        if self.is_main:
            ckpt.save_checkpoint(run_dir, step, {**self.state_dict(), **extra_state}, keep=keep)
        self.barrier()

    def checkpoints_newest_first(self, run_dir) -> list:
        """The run's checkpoints this strategy can resume from, newest first."""
        return [path for _, path in reversed(ckpt.list_checkpoints(run_dir))]

    def latest_checkpoint(self, run_dir):
        found = self.checkpoints_newest_first(run_dir)
        return found[0] if found else None

    def load_checkpoint(self, path) -> dict:
        """Restore model/optimizer/scaler from ``path``; return the whole state (step, rng, ...)."""
        # On the CPU first: RNG states must stay CPU tensors, and load_state_dict moves the
        # weights and the optimizer's moments to the parameters' device itself.
        return self.restore(ckpt.load_checkpoint(path, map_location="cpu"), path)

    def restore(self, state: dict, path) -> dict:
        """Restore from a checkpoint already read from ``path`` (ckpt.load_checkpoint)."""
        self.load_state_dict(state)
        return state

    def state_dict(self) -> dict:
        return {"model": self.unwrap().state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.unwrap().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = state.get("skipped_steps", 0)

    def close(self) -> None:
        pass
