"""Which strategy runs a process: ``engine.strategy`` and the launcher's world size.

``auto`` (the default) is DDP when the launcher started more than one rank and one process
otherwise, so ``torchrun --nproc_per_node 8 -m mmdist.train ...`` and ``sbatch --ntasks=8
slurm/train.sh ...`` train one run on eight ranks without a flag. ``single`` under a launcher
that started several ranks is refused: each would train its own copy and write into the same run
directory.
"""

from __future__ import annotations

from mmdist.engine.distributed import discover_ranks
from mmdist.engine.strategy import Strategy


class LaunchError(RuntimeError):
    """The engine settings do not fit how the process was launched. One line, naming the keys."""


def resolved_strategy_name(engine_config, world_size: int) -> str:
    """'single', 'ddp' or 'deepspeed' for ``engine.strategy`` at ``world_size`` ranks."""
    name = engine_config.strategy
    if name == "auto":
        return "ddp" if world_size > 1 else "single"
    if name == "single" and world_size > 1:
        raise LaunchError(f"engine.strategy=single, but the job has {world_size} ranks "
                          f"(world size {world_size}): each would train alone into one run "
                          "directory; use engine.strategy=ddp (or auto, the default)")
    return name


def build_strategy(engine_config) -> Strategy:
    """The Strategy for ``engine.strategy``. DDP and DeepSpeed start the process group from the
    launcher's variables (mmdist.engine.distributed)."""
    info = discover_ranks()
    name = resolved_strategy_name(engine_config, info.world_size)
    if name == "single":
        from mmdist.engine.single import SingleProcessStrategy

        return SingleProcessStrategy(engine_config)
    if name == "ddp":
        from mmdist.engine.ddp import DDPStrategy

        return DDPStrategy(engine_config, info)
    if name == "deepspeed":
        from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy

        return DeepSpeedStrategy(engine_config, info)
    raise ValueError(f"engine.strategy: unknown strategy {engine_config.strategy!r}")
