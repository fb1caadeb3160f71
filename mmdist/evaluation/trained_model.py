"""A trained network back from a checkpoint: which file of a run, which of its weights.

A run's checkpoints hold the raw weights ('model') and, with model.ema_decay > 0, their moving
average ('ema', mmdist.engine.ema); best.pt (trainer.select_by, mmdist.engine.selection) also
records the validation that chose it ('selection'). evaluate and predict read them through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import yaml

from mmdist.config import Config, from_dict
from mmdist.config.errors import InputNotFoundError
from mmdist.engine.checkpoint import (CheckpointError, best_checkpoint_path,
                                      find_latest_checkpoint, load_checkpoint)
from mmdist.engine.run_folder import check_config_matches
from mmdist.model import MultiMixNet, build_model

WEIGHTS = ("auto", "ema", "raw")
"""Which weights of a checkpoint to use: 'auto' the EMA's when it has them, else the raw ones."""


def weights_of(state: dict, weights: str = "auto", where: str = "checkpoint") -> tuple[str, dict]:
    """('ema' or 'raw', that state_dict) of a checkpoint dict for a ``weights`` choice."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights: {weights!r} is not one of {', '.join(WEIGHTS)}")
    if weights == "ema" and not state.get("ema"):
        raise CheckpointError(f"{where}: no EMA weights (the run trained with model.ema_decay=0); "
                              "use the raw weights")
    if weights != "raw" and state.get("ema"):
        return "ema", state["ema"]["model"]
    return "raw", state["model"]


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu", weights: str = "auto",
               run_dir: str | Path | None = None) -> tuple[MultiMixNet, Config, dict]:
    """Rebuild the network a checkpoint was trained as (from the config saved inside it) and load
    its ``weights`` (see weights_of). Returns (model in eval mode on ``device``, that config, the
    checkpoint dict with 'weights_used' set to 'ema' or 'raw'). A checkpoint of another network
    than ``run_dir``'s config.yaml says (default: the run folder the checkpoint sits in, when it
    has one) is refused in one line (mmdist.engine.run_folder)."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "config" not in state or "model" not in state:
        raise CheckpointError(f"{checkpoint}: checkpoint lacks the 'config' or 'model' entry")
    run_config = Path(run_dir or Path(checkpoint).resolve().parent.parent) / "config.yaml"
    if run_config.is_file():  # a run's checkpoint: it must be the network the run describes
        check_config_matches(state, yaml.safe_load(run_config.read_text()) or {}, checkpoint,
                             str(run_config))
    config = from_dict(state["config"])
    model = build_model(config.model)
    state["weights_used"], state_dict = weights_of(state, weights, str(checkpoint))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:  # missing or misshapen tensors: a damaged or edited file
        raise CheckpointError(f"{checkpoint}: its {state['weights_used']} weights do not fit "
                              f"the network its config describes ({exc})") from exc
    return model.to(device).eval(), config, state


def default_checkpoint(run_dir: str | Path) -> Path:
    """best.pt when the run kept one, else its latest step checkpoint."""
    best = best_checkpoint_path(run_dir)
    if best.is_file():
        return best
    latest = find_latest_checkpoint(run_dir)
    if latest is None:
        raise InputNotFoundError(f"{run_dir}/checkpoints: no best.pt or step_*.pt checkpoint to "
                                 "evaluate")
    return latest


def selection_of(state: dict) -> Optional[dict]:
    """The model selection that chose these weights (best.pt, or a step checkpoint that was the
    best so far when written); None otherwise."""
    record = state.get("selection")
    if record and record.get("step") == state.get("step"):
        return {k: record[k] for k in ("metric", "weights", "value")}
    return None
