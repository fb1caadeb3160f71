"""DistributedDataParallel: one process per rank, gradients averaged in the backward.

The saliency bridge needs no special handling here because the model computes it inside its
own forward with ``torch.autograd.grad`` on the input (mmdist.model.saliency): DDP sees one
forward and one backward per step, and the result equals one process on the concatenated
global batch (tests/engine/test_ddp_gradients.py). Two DDP options are deliberately fixed:

- ``static_graph`` is never used: with the double-backward saliency it gives silently wrong
  gradients at the first iteration and raises at the second.
- ``find_unused_parameters`` costs a graph traversal per step, so it is on only when the
  trainer says some parameter may get no gradient (``setup``; mmdist.engine.trainer decides
  from the variant table, which the engine does not read here).

The collectives and their failure reports are mmdist.engine.collectives'.
"""

from __future__ import annotations

import gc

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmdist.engine.collectives import ProcessGroupCollectives
from mmdist.engine.distributed import RankInfo, init_distributed
from mmdist.engine.strategy import Strategy


class DDPStrategy(Strategy):
    """One rank of a DDP job. The launcher's variables say which (mmdist.engine.distributed)."""

    def __init__(self, engine_config, info: RankInfo | None = None):
        super().__init__(engine_config, init_distributed(engine_config, info))
        self.collectives = ProcessGroupCollectives(self.info, self.device,
                                                   engine_config.collective_timeout_s)
        self.wrapped: DistributedDataParallel | None = None
        self.find_unused = False

    @property
    def name(self) -> str:
        return "ddp"

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer,
              find_unused_parameters: bool = False) -> nn.Module:
        """Wrap the model in DDP. ``find_unused_parameters``: some parameter may get no gradient
        in a step, so DDP must look for them after every backward (the trainer decides)."""
        self.model, self.optimizer = model.to(self.device), optimizer
        self.find_unused = find_unused_parameters
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # gradient_as_bucket_view: the gradients live in DDP's reduction buckets instead of
        # being copied into them after each backward (measured on 2 CPU ranks: exposed
        # communication 6% -> 2% of the step).
        self.wrapped = DistributedDataParallel(self.model, device_ids=device_ids,
                                               find_unused_parameters=self.find_unused,
                                               gradient_as_bucket_view=True)
        return self.wrapped

    # ---- the step (split so tests and benchmarks can look at the averaged gradients) ----------
    def backward(self, loss: torch.Tensor) -> None:
        """Backward with the gradient all-reduce (DDP's hooks average over ranks)."""
        with self.collectives.guarded("the gradient all-reduce"):
            self.scaler.scale(loss).backward()

    def gradients(self) -> dict[str, torch.Tensor]:
        """The averaged gradients after ``backward`` (before ``optimizer_step``), by name."""
        return {name: p.grad.detach().clone(memory_format=torch.contiguous_format)
                for name, p in self.model.named_parameters() if p.grad is not None}

    def close(self) -> None:
        """Release the DDP wrapper (its reducer holds the process group), then the group: the
        other order can abort a rank in C++ at exit (seen in bench/ddp.py), turning exit 3
        (preempted, requeued by slurm/train.sh) into 134. The caller drops its own references
        to the wrapped model first (Trainer.close)."""
        self.wrapped = self.model = self.optimizer = None
        gc.collect()
        self.collectives.close()
