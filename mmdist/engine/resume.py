"""Which checkpoint a run resumes from (``trainer.resume``), read back on every rank.

``true`` (or 'latest') takes the newest readable checkpoint of the run directory; a path takes
that file. An unreadable checkpoint (truncated, foreign, not a dict) is named in a warning, set
aside as *.pt.corrupt (so rotation never keeps it over good ones) and skipped; a named file that
cannot be read is an error. What is restored is every part of the run's Checkpointer
(mmdist.engine.checkpointer).
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


def resume(resume, checkpointer, run_dir: Path, check=None) -> Optional[int]:
    """Restore every part of ``checkpointer`` from the checkpoint ``resume`` picks (after
    ``check(state)``, e.g. the config against the run's) and return its step; None to start
    fresh. Checkpoints newer than the one resumed from belong to the abandoned continuation:
    they are moved aside (``*.abandoned``) with a warning naming them, so no later resume,
    evaluation or rotation takes them for this run's."""
    strategy = checkpointer.strategy
    candidates, explicit = resume_candidates(resume, strategy, run_dir)
    bad: list[tuple[Path, str]] = []
    step = None
    for path in candidates:
        try:
            raw = ckpt.load_checkpoint(path, map_location="cpu")
        except (ckpt.CheckpointError, FileNotFoundError) as exc:
            if explicit:
                raise
            bad.append((path, str(exc)))
            continue
        step = checkpointer.restore(raw, path, check)
        break
    for path, reason in bad:
        warnings.warn(f"trainer.resume: skipping unreadable checkpoint {path}: {reason}")
    unreadable = {path for path, _ in bad}
    newer = [] if step is None else [p for s, p in ckpt.list_checkpoints(run_dir)
                                     if s > step and p not in unreadable]
    if newer:
        warnings.warn(f"trainer.resume: resuming at step {step}; the newer checkpoint(s) "
                      f"{', '.join(p.name for p in newer)} of the abandoned continuation are "
                      "moved aside as *.abandoned")
    if bad or newer:
        strategy.barrier()  # every rank has given up on them before rank 0 moves them
        if strategy.is_main:
            for path, _ in bad:
                ckpt.set_aside(path)
            for path in newer:
                ckpt.set_aside(path, ".abandoned")
        strategy.barrier()
    if step is None and bad:
        raise ckpt.CheckpointError("trainer.resume: no readable checkpoint in "
                                   f"{ckpt.checkpoint_dir(run_dir)} (tried "
                                   f"{', '.join(p.name for p, _ in bad)})")
    return step
