"""The loop's host synchronisations, kept off the per-step path.

A CUDA step runs asynchronously until the host asks for a value: ``bool(torch.isfinite(loss))``,
``flag.item()`` after the stop agreement, ``loss.item()`` for a log line each stall the host
until the GPU has caught up, so the next step's launches cannot overlap this step's kernels.
Two checks the loop needs every step are therefore deferred:

- ``FiniteLossWatch``: each step taken folds ``isfinite(loss)`` into a device tensor (no sync)
  that remembers the first bad step; it is read at the loop's sync points (stop checks, log
  lines) and always before a checkpoint is written. (A step whose loss is not finite is skipped
  by the strategy on every rank; this catches what DeepSpeed steps regardless.)
- ``StopAgreement``: the ranks agree whether any of them received a stop signal every
  ``trainer.stop_check_every`` steps (one all-reduce and one read), and at the last step; all
  ranks check on the same steps, so all stop on the same step.

One read per step remains: whether the all-reduced gradients are finite, which decides whether
the optimizer steps (fp16: torch's GradScaler's own inf check; fp32/bf16: the same fused check
at scale 1, mmdist.engine.single). ``SkippedSteps`` counts the skipped ones in a row and stops
every rank together (they all saw the same gradients) at ``engine.max_skipped_in_a_row``.
"""

from __future__ import annotations

import torch


class FiniteLossWatch:
    def __init__(self, device: torch.device):
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        """Record ``step`` if ``loss`` is NaN or infinite and no earlier step was (no sync)."""
        bad = ~torch.isfinite(loss.detach())
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)

    def check(self, now: int) -> None:
        """Raise FloatingPointError if any loss so far was not finite (one host read)."""
        first = int(self._first_bad)
        if first >= 0:
            raise FloatingPointError(f"the loss of step {first} was not finite (found at step "
                                     f"{now}); nothing after step {first} was checkpointed. "
                                     "Resume from the last checkpoint with a lower optim.lr, or "
                                     "engine.precision=fp32/bf16 if this is fp16")


class StopAgreement:
    def __init__(self, strategy, every: int, last_step: int):
        self.strategy, self.every, self.last_step = strategy, every, last_step

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step >= self.last_step

    def agreed(self, step: int, requested: bool) -> bool:
        """On check steps: whether any rank was ``requested`` to stop (a signal); every rank
        calls this after every step, so all check, and stop, on the same steps."""
        if not self.due(step):
            return False
        flag = torch.tensor([float(requested)], device=self.strategy.device)
        if self.strategy.world_size > 1:
            flag = self.strategy.all_reduce_sum(flag)
        return bool(flag.item() > 0)


class TooManySkippedSteps(RuntimeError):
    """Steps were skipped for non-finite values ``engine.max_skipped_in_a_row`` times running."""


class SkippedSteps:
    """Counts the steps skipped in a row (a non-finite loss, saliency or gradient on some rank,
    or fp16 overflow; every rank skips the same steps) and stops the run, on every rank at once,
    when ``limit`` follow one another."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def taken(self) -> None:
        self.in_a_row = 0

    def skipped(self, step: int) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TooManySkippedSteps(
                f"engine.max_skipped_in_a_row: steps {step - self.in_a_row + 1}..{step} "
                f"({self.in_a_row} in a row) were skipped for a non-finite loss, saliency or "
                "gradient on some rank; nothing after the last checkpoint was saved. Resume "
                "from it with a lower optim.lr, or engine.precision=bf16 if this is fp16")
