"""Step sources: everything that turns the task data into StepBatches for a trainer.

``build_step_source`` picks the backend named by ``data.augment.backend``; the trainer only
calls ``source.batch(step)`` (through mmdist.data.feeding.iterate_steps) and never knows which.
"""

from __future__ import annotations

from mmdist.augment.torch_source import TorchStepSource


def build_step_source(config, task_data, streams: tuple[str, ...], rank: int = 0,
                      world_size: int = 1):
    """The step source for ``config.data.augment.backend`` ('torch' or 'dali')."""
    backend = config.data.augment.backend
    if backend == "torch":
        return TorchStepSource(task_data, streams, config.data, config.seed, rank, world_size)
    if backend == "dali":
        from mmdist.augment.dali_backend import DaliStepSource

        return DaliStepSource(task_data, streams, config.data, config.seed, rank, world_size)
    raise ValueError(f"data.augment.backend: unknown backend {backend!r}")
