"""Checkpoint files: written atomically, found by step, rotated, set aside.

A checkpoint is one ``torch.save`` dict at RUN_DIR/checkpoints/step_XXXXXXXX.pt with step, format
and one entry per stateful part of the run (mmdist.engine.checkpointer, which decides what they
are: config, model (state_dict of the bare network), optimizer, scaler, skipped_steps,
scheduler, rng_per_rank (every rank's random states, mmdist.engine.rng); with model.ema_decay > 0
also ema (mmdist.engine.ema), and with model selection on, selection (the best validation so far,
mmdist.engine.selection)). It is written to a temporary file in the same folder, flushed to disk,
then renamed over the final name, so a crash mid-write never leaves a truncated checkpoint under
a real name. RUN_DIR/checkpoints/best.pt (model, ema, config, step, selection; no optimizer) is
written the same way, and is neither rotated nor resumed from.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import torch

from mmdist.config.errors import InputNotFoundError

FORMAT = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or is not mmdist's; the message names the file."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def best_checkpoint_path(run_dir: str | Path) -> Path:
    return checkpoint_dir(run_dir) / "best.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def find_latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def atomic_torch_save(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(run_dir: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` (plus step and format) for ``step``; keep the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    atomic_torch_save({**state, "step": step, "format": FORMAT}, path)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def set_aside(path: str | Path, suffix: str = ".corrupt") -> Path:
    """Rename a checkpoint to ``*.pt.corrupt`` (unreadable) or ``*.pt.abandoned`` (newer than
    the one a run resumed from): kept for inspection, but no longer a checkpoint that resume
    picks or that rotation counts among the newest. DeepSpeed's shards folder beside it goes
    along."""
    path = Path(path)
    target = path.with_name(path.name + suffix)
    os.replace(path, target)
    shards = path.with_suffix("")
    if shards.is_dir():
        os.replace(shards, shards.with_name(shards.name + suffix))
    return target


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``: InputNotFoundError when there is no such file,
    CheckpointError when it is not a readable mmdist checkpoint; both name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which
        raise CheckpointError(f"{path}: not a readable mmdist checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an mmdist checkpoint (a {type(state).__name__}, "
                              "not a dict)")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mmdist checkpoint (format {state.get('format')!r})")
    return state
