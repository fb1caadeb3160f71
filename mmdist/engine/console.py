"""What a training run tells its console (rank 0): where it writes, each validation, progress,
and how to go on after a stop.

- ``run_folder_line``: the start line's run folder and where TensorBoard reads it.
- ``validation_line``: one line per validation, its metrics and the best so far.
- ``progress_bar``: tqdm's bar on a terminal; without one (a batch job's log, a pipe) a
  ``LineProgress`` that prints one plain line every ``every`` steps instead of carriage returns.
- ``resume_hint``: the command that resumes a stopped run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

NAMES = {"acc": "acc", "bacc": "bacc", "dice": "dice"}
"""Validation metrics a line shows, in this order (val_<name>, val_ema_<name>)."""


def run_folder_line(run_dir: str | Path) -> str:
    return f"mmdist: run folder {run_dir} (tensorboard --logdir {Path(run_dir) / 'tb'})"


def validation_line(step: int, max_steps: int, metrics: dict[str, float],
                    best: Optional[dict] = None) -> str:
    """'validation at step 40/365: acc 0.743 bacc 0.500 dice 0.612 | ema: ... | best val_mean
    0.677 (step 20)'; a one-class validation is marked. ``best``: BestCheckpoint.record()."""
    parts = []
    for prefix, label in (("val_", ""), ("val_ema_", "ema: ")):
        shown = [f"{name} {metrics[prefix + key]:.3f}" for key, name in NAMES.items()
                 if prefix + key in metrics]
        if shown:
            parts.append(label + " ".join(shown))
    line = f"validation at step {step}/{max_steps}: " + " | ".join(parts or ["no metrics"])
    if metrics.get("val_one_class") or metrics.get("val_ema_one_class"):
        line += " | ONE CLASS predicted for every image"
    if best and best.get("step") is not None:
        line += (f" | best {best['metric']} {best['value']:.3f} (step {best['step']}"
                 f"{', ' + best['weights'] + ' weights' if best.get('weights') == 'ema' else ''})")
    return line


def resume_hint(run_dir: str | Path, step: int) -> str:
    """The exit line of a run stopped by a signal after its checkpoint."""
    return (f"stopped at step {step} after a checkpoint; resume with: python -m mmdist.train "
            f"--config {Path(run_dir) / 'config.yaml'} trainer.resume=true")


class LineProgress:
    """tqdm's interface as the trainer uses it (update, set_postfix, write, close), printing
    'desc: step 120/2000 (6%), 3.1 steps/s, loss=0.523' every ``every`` steps and at the end."""

    def __init__(self, total: int, initial: int, desc: str, every: int, stream=None,
                 enabled: bool = True):
        self.total, self.n, self.desc = total, initial, desc
        self.every, self.enabled = max(1, every), enabled
        self.stream = stream or sys.stderr
        self.postfix = ""
        self._since, self._since_n = time.monotonic(), initial
        self._due = False

    def _print(self) -> None:
        self._due = False
        now = time.monotonic()
        rate = (self.n - self._since_n) / (now - self._since) if now > self._since else 0.0
        self._since, self._since_n = now, self.n
        share = 100 * self.n / self.total if self.total else 100.0
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: step {self.n}/{self.total} ({share:.0f}%), {rate:.2f} steps/s{tail}",
              file=self.stream, flush=True)

    def update(self, count: int = 1) -> None:
        # A due line waits for the step's set_postfix (the trainer logs the loss after update).
        if self._due:
            self._print()
        self.n += count
        self._due = self.enabled and self.n % self.every == 0

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._due:
            self._print()

    def close(self) -> None:
        if self._due or (self.enabled and self.n % self.every):
            self._print()  # the last partial stretch


def progress_bar(total: int, initial: int, desc: str, enabled: bool, every: int, stream=None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a LineProgress printing
    every ``every`` steps. ``enabled`` False: nothing is shown (other ranks, progress off)."""
    stream = stream or sys.stderr
    if stream.isatty():
        return tqdm(total=total, initial=initial, disable=not enabled, desc=desc,
                    dynamic_ncols=True, file=stream)
    return LineProgress(total, initial, desc, every, stream, enabled)


def say(progress, line: str, enabled: bool) -> None:
    """Print ``line`` on stdout without breaking a live bar (tqdm.write), when ``enabled``."""
    if not enabled:
        return
    if isinstance(progress, tqdm) and not progress.disable:
        progress.write(line, file=sys.stdout)
    else:
        print(line, flush=True)
