"""One checkpointer over the run's stateful parts: what a checkpoint holds, in one place.

A part is anything with ``state_dict()`` and ``load_state_dict(state)``; the checkpointer keeps
them by name, in registration order, and a checkpoint dict is ``{name: part.state_dict()}`` plus
step and format (mmdist.engine.checkpoint). Adding a piece of state to every checkpoint is one
line where the object is made::

    checkpointer.register("threshold_schedule", schedule)          # has state_dict/load_state_dict
    checkpointer.register("count", StateFns(lambda: n, set_count))  # two functions instead
    checkpointer.register("ema", ema, optional=True)                 # older checkpoints lack it

Restore goes in registration order (a part may rely on the ones before it, e.g. the RNG part on
the resumed step); a checkpoint without a part's entry is an error naming the key, unless the
part was registered ``optional=True``: then it keeps the state it was made with, or runs
``if_missing()`` when given (the EMA restarts from the resumed weights).
A part registered ``saved_only=True`` is written but never loaded back (the config, which is
checked against the run instead; DeepSpeed's model, which its shards restore).

A training run's parts (``run_checkpointer``): config, model, optimizer, scaler, skipped_steps
(the strategy's own, ``Strategy.checkpoint_parts``), scheduler, ema, selection, rng_per_rank;
the trainer adds the pseudo-label threshold state. How the files are written is the strategy's
only business (``write_checkpoint``: one torch.save on rank 0, or DeepSpeed's shards beside it;
``restore_files`` reads the shards back).

Nothing non-finite is written: before any checkpoint or best.pt, the weights (and the EMA's) are
checked on their device with one host read (``assert_finite``); fp32 and bf16 overflow gives a
finite loss and NaN weights, so the loss alone cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from mmdist.engine import checkpoint as ckpt
from mmdist.engine import rng


@dataclass
class StateFns:
    """A part made of two functions, for state that is not an object of its own."""

    save: Callable[[], Any]
    load: Callable[[Any], None]

    def state_dict(self):
        return self.save()

    def load_state_dict(self, state) -> None:
        self.load(state)


@dataclass
class _Entry:
    part: Any
    optional: bool
    saved_only: bool
    if_missing: Optional[Callable[[], None]]


def assert_finite(modules: dict[str, torch.nn.Module], step: int) -> None:
    """Raise FloatingPointError when a floating tensor of ``modules`` ({prefix: module}, e.g.
    {"": model, "ema.": average}) holds NaN or inf: checked on the device, one host read."""
    names, flags = [], []
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            if torch.is_tensor(tensor) and tensor.is_floating_point():
                names.append(prefix + name)
                flags.append(torch.isfinite(tensor).all())
    if not flags:
        return
    ok = torch.stack([flag.to(flags[0].device) for flag in flags]).tolist()  # the one host read
    bad = [name for name, good in zip(names, ok) if not good]
    if bad:
        raise FloatingPointError(f"the weights after step {step} are not finite ({len(bad)} "
                                 f"tensor(s), first {bad[0]}); nothing was checkpointed at step "
                                 f"{step}. Resume from the last checkpoint with a lower optim.lr, "
                                 "or engine.precision=bf16 if this is fp16")


class Checkpointer:
    """The run's checkpoint: its parts, written through the strategy, restored in order."""

    def __init__(self, run_dir: str | Path, strategy, keep: int,
                 finite_modules: Callable[[], dict[str, torch.nn.Module]] = dict):
        self.run_dir, self.strategy, self.keep = Path(run_dir), strategy, keep
        self.finite_modules = finite_modules
        self.parts: dict[str, _Entry] = {}
        self.step, self.loading = 0, None

    def register(self, name: str, part, optional: bool = False, saved_only: bool = False,
                 if_missing: Optional[Callable[[], None]] = None) -> None:
        """Add ``part`` (state_dict/load_state_dict) under ``name`` to every checkpoint."""
        if name in self.parts or name in ("step", "format"):
            raise ValueError(f"checkpoint part {name!r} is registered already")
        self.parts[name] = _Entry(part, optional or if_missing is not None, saved_only,
                                  if_missing)

    def state_dict(self) -> dict:
        """Every part's state (collective parts, e.g. the RNG gather, run on every rank)."""
        return {name: entry.part.state_dict() for name, entry in self.parts.items()}

    def save(self, step: int) -> None:
        """Check the weights, then write every part for ``step`` (call on every rank)."""
        assert_finite(self.finite_modules(), step)
        self.strategy.write_checkpoint(self.run_dir, step, self.state_dict(), keep=self.keep)

    def load_state_dict(self, state: dict, path: str | Path) -> int:
        """Restore every loadable part from a checkpoint dict read from ``path``; its step.
        While it runs, ``step`` and ``loading`` (the whole dict) are there for parts that need
        them (the RNG part reseeds by step; older files kept some state under other keys)."""
        self.step, self.loading = int(state["step"]), state
        for name, entry in self.parts.items():
            if entry.saved_only:
                continue
            if name not in state or state[name] is None:
                if not entry.optional:
                    raise ckpt.CheckpointError(f"{path}: the checkpoint has no {name!r} entry")
                if entry.if_missing is not None:
                    entry.if_missing()
                continue
            entry.part.load_state_dict(state[name])
        self.loading = None
        return self.step

    def restore(self, state: dict, path: str | Path) -> int:
        """The strategy's files (DeepSpeed shards), then the parts; returns the resumed step."""
        state = self.strategy.restore_files(state, path)
        return self.load_state_dict(state, path)


def run_checkpointer(run_dir, config, strategy, scheduler, ema=None, best=None) -> Checkpointer:
    """A training run's Checkpointer: every stateful part, in restore order. ``ema`` is the
    run's ModelEMA (mmdist.engine.ema), ``best`` its BestCheckpoint (mmdist.engine.selection)."""
    device = strategy.device

    def weights() -> dict:  # what a checkpoint or best.pt holds, for the finiteness check
        return {"": strategy.unwrap(), **({"ema.": ema.module} if ema is not None else {})}

    parts = Checkpointer(run_dir, strategy, config.trainer.keep_checkpoints, weights)
    parts.register("config", StateFns(config.to_dict, None), saved_only=True)
    for name, (part, options) in strategy.checkpoint_parts().items():
        parts.register(name, part, **options)
    parts.register("scheduler", scheduler)
    if ema is not None:  # a checkpoint of a run without the average: it restarts from the weights
        parts.register("ema", ema, if_missing=lambda: ema.restore(None, strategy.unwrap()))
    if best is not None:
        # Without a record in the checkpoint, best.pt's own on disk still counts.
        parts.register("selection", StateFns(best.record, best.restore),
                       if_missing=lambda: best.restore(None))

    def load_rng(states) -> None:  # after the step is known; older files kept 'rng'
        saved = parts.loading if states is None else {"rng_per_rank": states}
        rng.restore_for_rank(saved, strategy.rank, strategy.world_size, config.seed, parts.step,
                             device)

    parts.register("rng_per_rank", StateFns(
        lambda: strategy.all_gather_object(rng.capture(device)), load_rng),
        if_missing=lambda: load_rng(None))
    return parts
