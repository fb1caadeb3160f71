"""How a step's backward and optimizer update run: one process, DDP or DeepSpeed.

The trainer talks to a Strategy only: it hands over the model and optimizer once (``setup``),
then calls ``backward_step(loss)`` each step and the collective helpers for metrics. The single
process strategy is here; the distributed ones plug in through ``build_strategy``.
"""

from __future__ import annotations

import torch
from torch import nn

from mmdist.engine import checkpoint as ckpt
from mmdist.engine.precision import grad_scaler


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("engine.device=cuda but no CUDA device is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


class Strategy:
    """One process, CPU or one GPU. Subclasses override what differs across ranks."""

    rank = 0
    world_size = 1
    local_rank = 0

    def __init__(self, engine_config):
        self.config = engine_config
        self.device = resolve_device(engine_config.device, self.local_rank)
        self.precision = engine_config.precision
        self.scaler = grad_scaler(self.device, self.precision)
        self.skipped_steps = 0
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

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

    # ---- collectives (identity for one process) ------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, run_dir, step: int, extra_state: dict, keep: int) -> None:
        """Rank 0 writes model/optimizer/scaler + ``extra_state`` atomically; the others wait."""
        if self.is_main:
            ckpt.save_checkpoint(run_dir, step, {**self.state_dict(), **extra_state}, keep=keep)
        self.barrier()

    def latest_checkpoint(self, run_dir):
        return ckpt.find_latest_checkpoint(run_dir)

    def load_checkpoint(self, path) -> dict:
        """Restore model/optimizer/scaler from ``path``; return the whole state (step, rng, ...)."""
        state = ckpt.load_checkpoint(path, map_location=self.device)
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


def build_strategy(engine_config) -> Strategy:
    """The Strategy named by ``engine.strategy``. 'ddp' and 'deepspeed' discover their rank from
    the launcher's variables and start the process group (mmdist.engine.distributed)."""
    if engine_config.strategy == "single":
        return Strategy(engine_config)
    if engine_config.strategy == "ddp":
        from mmdist.engine.ddp import DDPStrategy

        return DDPStrategy(engine_config)
    if engine_config.strategy == "deepspeed":
        from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy

        return DeepSpeedStrategy(engine_config)
    raise ValueError(f"engine.strategy: unknown strategy {engine_config.strategy!r}")
