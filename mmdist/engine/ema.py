"""An exponential moving average (EMA) of the network's weights (``model.ema_decay``).

After the t-th optimizer step that was taken (t = 0, 1, ... counts the EMA updates so far; a step
the fp16 GradScaler skipped is no update), every parameter is averaged as

    d_t = min(decay, (1 + t) / (10 + t))
    ema = d_t * ema + (1 - d_t) * param

starting from the initial weights. The warm-up (d_0 = 0.1, d_10 = 0.55, d_90 = 0.91) lets the
average forget the random initialisation within tens of steps, so a short run is not validated on
near-initial weights; from t = (10 * decay - 1) / (1 - decay) on (8,990 for 0.999) the plain
decay holds. Buffers are copied, not averaged (the network's InstanceNorm keeps no running
statistics; anything a buffer holds is the live network's current value).

Every rank keeps its own average: DDP and DeepSpeed (ZeRO <= 2) leave the same full parameters
on every rank after each step, so the averages agree without any communication.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def warmup_decay(decay: float, updates: int) -> float:
    """The decay of the update that follows ``updates`` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates))


class ModelEMA:
    """The average as a network of its own (``module``, eval mode, no gradients), ready to
    validate, and as a checkpoint entry ``{"decay", "updates", "model": state_dict}`` whose
    ``model`` loads into ``build_model(config.model)`` like the raw weights do.

    Not torch.optim.swa_utils.AveragedModel: its update count is a device tensor that it reads on
    the host twice per update (a GPU sync every step), and a warm-up decay from it would need a
    third; here the count is a Python int. The update itself is torch's own EMA step
    (get_ema_multi_avg_fn: one foreach lerp over all parameters).
    """

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str):
        """``model``: the bare network before any strategy wraps it (a deepcopy, so no wrapper
        state or hook comes along, and no random number is drawn)."""
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).to(device).eval().requires_grad_(False)
        self._params = [p.detach() for p in self.module.parameters()]
        self._names = [name for name, _ in self.module.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in ``model``'s current weights (the bare network, as strategy.unwrap() gives)."""
        # Looked up each time: a strategy may re-point parameters at new storage (ZeRO's flat
        # buffers, a restored checkpoint); the names check that the two networks still match.
        named = list(model.named_parameters())
        if [name for name, _ in named] != self._names:
            raise RuntimeError("ModelEMA.update: the network's parameters are not the ones the "
                               "average was made from")
        average = get_ema_multi_avg_fn(warmup_decay(self.decay, self.updates))
        average(self._params, [p.detach() for _, p in named], None)
        for mine, live in zip(self.module.buffers(), model.buffers()):
            mine.copy_(live)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's entry exactly (tensors copied, the update count kept), so the
        resumed average continues bit for bit. The decay stays the config's."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])

    def restore(self, state: dict | None, model: nn.Module) -> None:
        """On resume: the checkpoint's entry, or (a checkpoint of a run that trained without the
        average) a fresh start from the resumed weights ``model``."""
        if state:
            self.load_state_dict(state)
        else:
            self.module.load_state_dict(model.state_dict())
            self.updates = 0
