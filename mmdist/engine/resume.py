"""Which checkpoint a run resumes from (``trainer.resume``), read back on every rank.

``true`` (or 'latest') takes the newest readable checkpoint of the run directory; a path takes
that file. An unreadable checkpoint is named in a warning, set aside as *.pt.corrupt (so rotation
never keeps it over good ones) and skipped; a named file that cannot be read is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from mmdist.engine import checkpoint as ckpt


def resume_candidates(resume, strategy, run_dir: Path) -> tuple[list[Path], bool]:
    """(checkpoints to try, newest first; whether the user named one explicitly)."""
    if resume is False or resume in ("", "false", "False"):
        return [], False
    if resume is True or resume in ("true", "True", "latest"):
        return strategy.checkpoints_newest_first(run_dir), False
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume: checkpoint not found: {path}")
    return [path], True


def read_resume_state(resume, strategy, run_dir: Path) -> Optional[dict]:
    """Restore the strategy (model, optimizer, scaler) from the checkpoint ``resume`` picks and
    return that checkpoint's whole dict (step, scheduler, rng_per_rank, ...); None to start fresh."""
    candidates, explicit = resume_candidates(resume, strategy, run_dir)
    bad: list[tuple[Path, str]] = []
    state = None
    for path in candidates:
        try:
            raw = ckpt.load_checkpoint(path, map_location="cpu")
        except (ckpt.CheckpointError, FileNotFoundError) as exc:
            if explicit:
                raise
            bad.append((path, str(exc)))
            continue
        state = strategy.restore(raw, path)
        break
    for path, reason in bad:
        warnings.warn(f"trainer.resume: skipping unreadable checkpoint {path}: {reason}")
    if bad:
        strategy.barrier()  # every rank has given up on them before rank 0 moves them
        if strategy.is_main:
            for path, _ in bad:
                ckpt.set_aside(path)
    if state is None and bad:
        raise ckpt.CheckpointError("trainer.resume: no readable checkpoint in "
                                   f"{ckpt.checkpoint_dir(run_dir)} (tried "
                                   f"{', '.join(p.name for p, _ in bad)})")
    return state
