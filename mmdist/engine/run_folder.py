"""A run folder belongs to one run.

Training into an ``output_dir`` that holds another run's files (step checkpoints, best.pt,
TensorBoard events, summary.json) without ``trainer.resume`` would mix two runs: rotation keeps
the old, higher step numbers over the new ones, evaluate scores the old best.pt under the new
run's name, and TensorBoard overlays both. ``claim`` refuses that in one line naming the folder
and the ways out, or, with ``trainer.overwrite=true``, removes the old run's files first.

Resume and evaluate compare a checkpoint's config with the run's config.yaml on the keys that
decide what the weights are (``MUST_MATCH``) and say in one line which differ
(``check_config_matches``); learning rate, step counts and the like may change between a run
and its resume.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from mmdist.config.variants import VARIANTS, resolve_saliency
from mmdist.engine import checkpoint as ckpt

MUST_MATCH = ("model.variant", "model.width", "model.saliency", "data.image_size")
"""The network's architecture and what it was trained to see; anything else may differ."""


class RunFolderError(ckpt.CheckpointError):
    """The output folder holds another run's files, or a checkpoint is of another run."""


def previous_run_files(run_dir: str | Path) -> list[Path]:
    """The files of a run that trained in ``run_dir`` before (its config.yaml alone is not one:
    every start rewrites it)."""
    run_dir = Path(run_dir)
    found: list[Path] = []
    folder = ckpt.checkpoint_dir(run_dir)
    if folder.is_dir():
        found += sorted(p for p in folder.iterdir() if p.name.startswith(("step_", "best.pt")))
    tb = run_dir / "tb"
    if tb.is_dir():
        found += sorted(tb.rglob("events.out.tfevents.*"))
    if (run_dir / "summary.json").is_file():
        found.append(run_dir / "summary.json")
    return found


def claim(run_dir: str | Path, resume, overwrite: bool) -> list[Path]:
    """Make ``run_dir`` this run's: nothing to do when it is new or the run resumes; else remove
    the old run's files with ``overwrite`` (returns them), or raise RunFolderError."""
    if resume not in (False, None, "", "false", "False"):
        return []
    old = previous_run_files(run_dir)
    if not old:
        return []
    if not overwrite:
        shown = ", ".join(str(p.relative_to(run_dir)) for p in old[:3])
        more = f" and {len(old) - 3} more" if len(old) > 3 else ""
        raise RunFolderError(f"output_dir {run_dir} holds another run's files ({shown}{more}); "
                             "continue it with trainer.resume=true, train into a new "
                             "output_dir, or replace it with trainer.overwrite=true")
    for path in old:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return old


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _resolved_saliency(tree: dict) -> Optional[str]:
    """model.saliency with 'auto' resolved for the variant (so 'auto' and its meaning match)."""
    value, variant = _dotted(tree, "model.saliency"), _dotted(tree, "model.variant")
    if value != "auto" or variant not in VARIANTS:
        return value
    return resolve_saliency(variant, value)


def config_differences(saved: dict, current: dict) -> list[str]:
    """'key: checkpoint A, run B' for each MUST_MATCH key that differs."""
    out = []
    for key in MUST_MATCH:
        get = _resolved_saliency if key == "model.saliency" else lambda t, k=key: _dotted(t, k)
        a, b = get(saved), get(current)
        if a != b:
            out.append(f"{key}: checkpoint {a!r}, run {b!r}")
    return out


def check_config_matches(state: dict, current: dict, path, what: str) -> None:
    """Raise RunFolderError when checkpoint ``state`` (read from ``path``) was trained as
    another network than the config ``current`` (``what`` names it, e.g. the run's config.yaml)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return  # a checkpoint without its config: nothing to compare (weights decide)
    differences = config_differences(saved, current)
    if differences:
        raise RunFolderError(f"{path}: trained as another network than {what} says "
                             f"({'; '.join(differences)}); pick that run's checkpoint or train "
                             "into a new output_dir")
