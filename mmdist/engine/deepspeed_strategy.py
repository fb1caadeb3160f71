"""DeepSpeed: ZeRO stages 0-2 from a JSON file, with the trainer's own optimizer and schedule.

The DeepSpeed JSON (``engine.deepspeed_config``, e.g. configs/deepspeed/zero1.json) holds what
is DeepSpeed's business: the ZeRO stage and its buckets, gradient clipping (explicit, because
DeepSpeed clips at 1.0 unless told), communication options. What the training config already
states is filled in here and may not be repeated in the JSON (mmdist.config checks it at load):

- precision comes from ``engine.precision`` as DeepSpeed's ``torch_autocast`` (bf16 or fp16):
  the master weights stay fp32 as under DDP, the same autocast runs the forward, and fp16 gets
  DeepSpeed's GradScaler. fp16 is ZeRO-0 only (mmdist.config refuses ZeRO-1/2: they decide
  overflow before the optimizer step that would back the scaler off, so the scale never leaves
  2**16); ZeRO-0 unscales before ``gradient_clipping``. The model's saliency keeps its own fixed
  inner scale.
- gradients are reduced in fp32, as DDP reduces them. DeepSpeed's torch_autocast would mark
  every Linear/Conv parameter for reduction in the autocast dtype (its
  ``lower_precision_safe_modules`` default), and ``communication_data_type`` does not apply to
  marked parameters; the list is therefore set empty, unless ``engine.low_precision_reduce``
  asks for DeepSpeed's default (half the gradient traffic, about 3 significant digits less).
- the optimizer is the trainer's torch Adam (passing it skips DeepSpeed's fused-Adam build; ZeRO
  then needs ``zero_allow_untested_optimizer``), and the trainer's StepLR drives its lr.
- the batch is the trainer's: one micro-batch per step, no gradient accumulation.

Checkpoints go through the engine (every rank writes its ZeRO shard) into
RUN_DIR/checkpoints/step_XXXXXXXX/, and rank 0 also writes the usual step_XXXXXXXX.pt with the
full weights (ZeRO <= 2 keeps them whole on every rank), the scheduler, RNG, config and the fp16
GradScaler (which DeepSpeed's own checkpoint lacks) from the run's checkpointer
(mmdist.engine.checkpointer), so evaluation and the rest of the toolkit read a DeepSpeed run like
any other. A .pt without its shards is a CheckpointError.

The collectives, their failure reports and the progress watchdog are the ones DDP uses
(mmdist.engine.collectives); the rest of the Strategy interface is DeepSpeed's engine.
"""

from __future__ import annotations

import gc
import os
import shutil
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

from mmdist.config import read_deepspeed_json
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.checkpointer import StateFns
from mmdist.engine.collectives import ProcessGroupCollectives
from mmdist.engine.distributed import RankInfo, backend_for, init_distributed
from mmdist.engine.precision import grad_scaler
from mmdist.engine.strategy import Strategy

AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def deepspeed_settings(path: str, precision: str, low_precision_reduce: bool = False) -> dict:
    """The DeepSpeed config dict for ``path`` with mmdist's batch, optimizer and precision."""
    settings = read_deepspeed_json(path)
    settings.setdefault("train_micro_batch_size_per_gpu", 1)  # batches are the trainer's own
    settings.setdefault("gradient_accumulation_steps", 1)
    settings.setdefault("zero_allow_untested_optimizer", True)
    settings.setdefault("steps_per_print", 2**31 - 1)  # the trainer logs; keep DeepSpeed quiet
    if precision in AUTOCAST_DTYPES:
        settings["torch_autocast"] = {"enabled": True, "dtype": AUTOCAST_DTYPES[precision]}
        if not low_precision_reduce:
            # No module's parameters are marked for low-precision reduction: all reduce in fp32.
            settings["torch_autocast"]["lower_precision_safe_modules"] = []
    return settings


class DeepSpeedStrategy(Strategy):
    """One rank of a DeepSpeed job. The launcher's variables say which
    (mmdist.engine.distributed)."""

    def __init__(self, engine_config, info: RankInfo | None = None):
        if engine_config.device == "cpu" or (engine_config.device == "auto"
                                             and not torch.cuda.is_available()):
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        super().__init__(engine_config, init_distributed(engine_config, info))
        self.collectives = ProcessGroupCollectives(self.info, self.device,
                                                   engine_config.collective_timeout_s)
        # DeepSpeed's torch_autocast brings its own GradScaler (_autocast_scaler): torch's,
        # which the base step would use, stays off.
        self.scaler = grad_scaler(self.device, "fp32")
        import deepspeed

        # The torch process group exists already; this only attaches DeepSpeed's comm layer to it
        # (auto_mpi_discovery off: the ranks were discovered by mmdist.engine.distributed).
        deepspeed.init_distributed(dist_backend=backend_for(self.device), auto_mpi_discovery=False,
                                   timeout=timedelta(seconds=engine_config.collective_timeout_s),
                                   verbose=False)
        self.settings = deepspeed_settings(engine_config.deepspeed_config, self.precision,
                                           engine_config.low_precision_reduce)
        self.engine = None
        self.saved_step: int | None = None

    @property
    def name(self) -> str:
        return "deepspeed"

    def close(self) -> None:
        """Release the engine (it holds the process group), then the group."""
        self.engine = self.model = self.optimizer = None
        gc.collect()
        self.collectives.close()

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              find_unused_parameters: bool = False) -> nn.Module:
        """Hand model and optimizer to deepspeed.initialize; ``find_unused_parameters`` is
        DDP's option and unused here."""
        import deepspeed

        # DeepSpeed broadcasts and flattens parameters through byte views, which need a
        # contiguous last dimension: NHWC (channels_last) weights go back to NCHW. The batches
        # stay NHWC, and convolutions still pick the NHWC kernels from their input.
        model = model.to(self.device, memory_format=torch.contiguous_format)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                    config=self.settings)
        # The bare torch optimizer: its param_groups are the ones DeepSpeed steps, so the
        # trainer's StepLR on it sets DeepSpeed's learning rate.
        self.model, self.optimizer = self.engine.module, optimizer
        return self.engine

    def _autocast_scaler(self):
        return (getattr(self.engine, "torch_autocast_z0_gradscaler", None)
                or getattr(self.engine.optimizer, "torch_autocast_gradscaler", None))

    def backward(self, loss: torch.Tensor) -> None:
        with self.collectives.guarded("the gradient reduction"):
            self.engine.backward(loss)

    def optimizer_step(self) -> bool:
        """DeepSpeed's step. Under fp16 (ZeRO-0 only: mmdist.config refuses ZeRO-1/2) its
        autocast GradScaler skips a step with inf/NaN gradients and backs off; its scale is read
        once per step. Under fp32/bf16 a non-finite gradient is not skipped by DeepSpeed: the
        poisoned loss (backward_step) makes it NaN on every rank alike, and the weights check
        before every checkpoint stops all ranks together."""
        scaler = self._autocast_scaler()
        if scaler is not None and self._last_scale is None:
            self._last_scale = scaler.get_scale()
        skipped_before = self.engine.skipped_steps
        self.engine.step()  # steps, zeroes the gradients, updates the loss scale
        stepped = self.engine.skipped_steps == skipped_before
        if scaler is not None:
            scale = scaler.get_scale()
            stepped = stepped and scale >= self._last_scale
            self._last_scale = scale
        self.skipped_steps += int(not stepped)
        return stepped

    def gradients(self) -> dict[str, torch.Tensor]:
        """The averaged full gradients after ``backward`` (ZeRO shards gathered), by name."""
        from deepspeed.utils import safe_get_full_grad

        out = {}
        for name, param in self.model.named_parameters():
            grad = safe_get_full_grad(param)
            if grad is not None:
                out[name] = grad.detach().float().clone()
        return out

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint_parts(self) -> dict[str, tuple[object, dict]]:
        """The .pt keeps the full weights for evaluation (restored from the shards, so saved
        only), DeepSpeed's autocast GradScaler (fp16; DeepSpeed's own checkpoint lacks it, and
        every resume would restart at 2**16) and the skipped-step count. Optimizer and
        weights come back from the shards (restore_files)."""
        return {"model": (self.model, {"saved_only": True}),
                "scaler": (StateFns(self._scaler_state, self._load_scaler), {"optional": True}),
                "skipped_steps": (StateFns(lambda: self.skipped_steps, self._load_skipped),
                                  {"optional": True})}

    def _scaler_state(self) -> dict:
        scaler = self._autocast_scaler()
        return scaler.state_dict() if scaler is not None else {}

    def _load_scaler(self, state) -> None:
        scaler = self._autocast_scaler()
        if state and scaler is not None:
            scaler.load_state_dict(state)
        self._last_scale = None

    def write_checkpoint(self, run_dir, step: int, state: dict, keep: int) -> None:
        folder = ckpt.checkpoint_dir(run_dir)
        tag = f"step_{step:08d}"
        if self.saved_step == step:
            return  # saved already: the trainer's closing save follows a periodic one
        self.engine.save_checkpoint(str(folder), tag=tag,
                                    client_state={"skipped_steps": self.skipped_steps})
        self.barrier()  # every shard is on disk before the .pt that marks the step complete
        if self.is_main:
            ckpt.save_checkpoint(run_dir, step, {**state, "deepspeed_tag": tag}, keep=keep)
            kept = {path.stem for _, path in ckpt.list_checkpoints(run_dir)}
            for old in folder.glob("step_*"):
                if old.is_dir() and old.name not in kept:
                    shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        self.saved_step = step

    def checkpoints_newest_first(self, run_dir) -> list:
        """The step_XXXXXXXX.pt files with their DeepSpeed shards folder beside them, newest
        first (else every .pt, which restore_files refuses with a message: not DeepSpeed's)."""
        found = [path for _, path in reversed(ckpt.list_checkpoints(run_dir))]
        complete = [path for path in found if path.with_suffix("").is_dir()]
        return complete or found

    def restore_files(self, state: dict, path) -> dict:
        """Load the ZeRO shards beside ``path`` into the engine (weights and optimizer)."""
        path = Path(path)
        tag = state.get("deepspeed_tag")
        if tag is None or not (path.parent / tag).is_dir():
            raise ckpt.CheckpointError(
                f"{path}: no DeepSpeed shards beside it (expected folder "
                f"{path.parent / (tag or path.stem)}); it was not written by "
                "engine.strategy=deepspeed")
        try:
            loaded, _ = self.engine.load_checkpoint(str(path.parent), tag=tag,
                                                    load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
        except Exception as exc:  # a damaged shard (EOFError, UnpicklingError, ...): name it
            raise ckpt.CheckpointError(f"{path.parent / tag}: DeepSpeed could not load this "
                                       f"checkpoint ({type(exc).__name__}: {exc})") from exc
        if loaded is None:
            raise ckpt.CheckpointError(f"{path.parent / tag}: DeepSpeed could not load this "
                                       "checkpoint")
        return state
