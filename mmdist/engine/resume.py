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

from mmdist.config.errors import InputNotFoundError
from mmdist.engine import checkpoint as ckpt


def resume_candidates(resume, strategy, run_dir: Path) -> tuple[list[Path], bool]:
    """(checkpoints to try, newest first; whether the user named one explicitly)."""
    if resume is False or resume in ("", "false", "False"):
        return [], False
    if resume is True or resume in ("true", "True", "latest"):
        return strategy.checkpoints_newest_first(run_dir), False
    path = Path(resume)
    if not path.is_file():
        raise InputNotFoundError(f"trainer.resume: checkpoint not found: {path}")
    return [path], True


def resume(resume, checkpointer, run_dir: Path, check=None) -> Optional[int]:
    """Restore every part of ``checkpointer`` from the checkpoint ``resume`` picks (after
    ``check(state, path)``, e.g. the config against the run's) and return its step; None to
    start fresh. Checkpoints newer than the one resumed from belong to the abandoned
    continuation: they, and a best.pt chosen after the resumed step, are moved aside
    (``*.abandoned``) with a warning naming them, before anything is restored, so no later
    resume, evaluation, rotation or model selection takes them for this run's."""
    strategy = checkpointer.strategy
    candidates, explicit = resume_candidates(resume, strategy, run_dir)
    bad: list[tuple[Path, str]] = []
    found = None
    for path in candidates:
        try:
            found = (path, ckpt.load_checkpoint(path, map_location="cpu"))
        except (ckpt.CheckpointError, FileNotFoundError) as exc:
            if explicit:
                raise
            bad.append((path, str(exc)))
            continue
        break
    for path, reason in bad:
        warnings.warn(f"trainer.resume: skipping unreadable checkpoint {path}: {reason}")
    if found is None:
        _set_aside(strategy, bad, [])
        if bad:
            raise ckpt.CheckpointError("trainer.resume: no readable checkpoint in "
                                       f"{ckpt.checkpoint_dir(run_dir)} (tried "
                                       f"{', '.join(p.name for p, _ in bad)})")
        return None
    path, state = found
    if check is not None:
        check(state, Path(path))
    _set_aside(strategy, bad, abandoned_after(run_dir, int(state["step"]),
                                              {p for p, _ in bad}))
    return checkpointer.restore(state, path)


def abandoned_after(run_dir: Path, step: int, unreadable: set) -> list[Path]:
    """The readable checkpoints after ``step``, and best.pt when it was chosen after ``step``
    and such checkpoints exist (a run taken back to an earlier step); warns naming them."""
    newer = [p for s, p in ckpt.list_checkpoints(run_dir) if s > step and p not in unreadable]
    if not newer:
        return []
    best = ckpt.best_checkpoint_path(run_dir)
    if best.is_file():
        try:
            if (ckpt.load_checkpoint(best).get("step") or 0) > step:
                newer.append(best)
        except ckpt.CheckpointError:
            newer.append(best)
    warnings.warn(f"trainer.resume: resuming at step {step}; "
                  f"{', '.join(p.name for p in newer)} of the abandoned continuation "
                  "are moved aside as *.abandoned")
    return newer


def _set_aside(strategy, bad: list, abandoned: list[Path]) -> None:
    """Rank 0 renames the unreadable (*.corrupt) and abandoned (*.abandoned) files, with every
    rank past its own reads first and none reading on until the renames are done."""
    if not (bad or abandoned):
        return
    strategy.barrier()
    if strategy.is_main:
        for path, _ in bad:
            ckpt.set_aside(path)
        for path in abandoned:
            ckpt.set_aside(path, ".abandoned")
    strategy.barrier()
