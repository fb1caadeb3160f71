"""One process, on the CPU or one GPU: the model unwrapped, collectives that return their input.

Everything else (the step with torch's GradScaler, one-file checkpoints) is the Strategy base's
(mmdist.engine.strategy).
"""

from __future__ import annotations

from mmdist.engine.collectives import OneProcessCollectives
from mmdist.engine.strategy import Strategy


class SingleProcessStrategy(Strategy):
    """The only rank of a one-process run."""

    def __init__(self, engine_config):
        super().__init__(engine_config)
        self.collectives = OneProcessCollectives()

    @property
    def name(self) -> str:
        return "single"
