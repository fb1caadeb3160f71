"""TensorBoard from one place: scalars, images and hparams of a run, written by rank 0 only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


def _to_grid(images: torch.Tensor, count: int = 8) -> torch.Tensor:
    """(N, 1, H, W) any range -> (1, H, count*W) in [0, 1], each image min-max scaled."""
    images = images[:count].detach().float().cpu()
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    images = (images - low) / (high - low).clamp_min(1e-8)
    return torch.cat(list(images), dim=-1)


class TensorBoardLogger:
    """Writes RUN_DIR/tb. Every method is a no-op on ranks other than 0."""

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        """``purge_step``: the first step a resumed run logs; events a crashed run logged at or
        after it are dropped, so TensorBoard shows every step once."""
        self.enabled = enabled
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if enabled else None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}{name}", float(value), step)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        if self.enabled and images is not None:
            self.writer.add_image(tag, _to_grid(images), step)

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """Record hparams in this run's own event file (not a sub-run), so that a sweep folder
        opened as one TensorBoard shows one row per run."""
        if not self.enabled:
            return
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        experiment, session_start, session_end = hparams_summary(clean, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)

    def flush(self) -> None:
        if self.enabled:
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
