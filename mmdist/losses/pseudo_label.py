"""The classifier's pseudo-labels: which weak-view predictions train the strong view, and how much.

``losses.threshold``:
- 'fixed': FixMatch (the paper): weight 1 where max(p) >= losses.tau, else 0.
- 'freematch': FreeMatch's self-adaptive threshold (Wang et al., ICLR 2023, eq. 4-6). With
  lambda = losses.threshold_momentum and C classes, per step on the unlabeled batch's weak
  probabilities q_b:  tau_t = lambda tau_{t-1} + (1 - lambda) mean_b max(q_b)  (tau_0 = 1/C);
  p_t(c) = lambda p_{t-1}(c) + (1 - lambda) mean_b q_b(c)  (p_0(c) = 1/C);
  tau_t(c) = p_t(c) / max_c' p_t(c') * tau_t; weight 1 where max(q_b) >= tau_t(argmax q_b).
  The statistics are updated with the batch before its mask is taken, as in USB. (FreeMatch's
  self-adaptive fairness loss is not included.)
- 'softmatch': SoftMatch's truncated-Gaussian weight (Chen et al., ICLR 2023): mu_t and sigma_t^2
  are EMAs (same momentum) of the batch mean and unbiased variance of max(q) (mu_0 = 1/C,
  sigma_0^2 = 1); weight 1 where max(q) >= mu_t, else exp(-(max(q) - mu_t)^2 / (2 sigma_t^2 / n^2))
  with n = 2 standard deviations, as in USB.

``losses.dist_align``: distribution alignment (ReMixMatch; USB's DistAlignEMAHook) before the
threshold: q <- normalise(q * p_target / p_model), p_model the EMA of the mean weak prediction and
p_target the EMA of the labeled batches' class frequencies (add-one smoothed, so a batch without a
class does not zero it); both start from the first batch. Kermany is about 3:1 pneumonia:normal,
so the target is the labeled prior, not uniform.

Under DDP/DeepSpeed the batch statistics are summed over ranks (``reduce_sum``, the strategy's
all-reduce) before the update, so every rank holds the same state: the one-process state of the
global batch. ``state_dict``/``load_state_dict`` carry it through checkpoints exactly.

A step's update is only proposed by ``__call__`` and kept by ``commit()`` once the optimizer step
was taken; ``discard()`` drops it when the engine skipped the step (fp16 overflow, non-finite
loss), so a skipped step leaves the state bit for bit as it was. Non-finite batch statistics (a
NaN or inf in the weak logits on any rank) make every weight NaN on every rank, so the loss goes
non-finite and the engine skips that step everywhere instead of training on a poisoned state.
"""

from __future__ import annotations

from typing import Callable

import torch

from mmdist.model.saliency import at_least_fp32

_STATE = ("tau", "p_model", "mu", "var", "da_model", "da_target", "updates")

ReduceSum = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over the ranks and returns it (the strategy's ``all_reduce_sum``)."""


class PseudoLabeler:
    """Pseudo-labels and weights from weak-view logits; holds the schedule's running state.

    ``reduce_sum`` sums the batch statistics over the ranks (None: this process's batch only).
    """

    def __init__(self, threshold: str = "fixed", tau: float = 0.7, momentum: float = 0.999,
                 dist_align: bool = False, num_classes: int = 2, n_sigma: float = 2.0,
                 reduce_sum: ReduceSum | None = None):
        if threshold not in ("fixed", "freematch", "softmatch"):
            raise ValueError(f"unknown threshold schedule {threshold!r}")
        self.threshold, self.fixed_tau, self.momentum = threshold, tau, momentum
        self.dist_align, self.num_classes, self.n_sigma = dist_align, num_classes, n_sigma
        self.reduce_sum = reduce_sum
        k = num_classes
        self.tau = torch.tensor(1.0 / k)
        self.p_model = torch.full((k,), 1.0 / k)
        self.mu = torch.tensor(1.0 / k)
        self.var = torch.tensor(1.0)
        self.da_model = torch.full((k,), 1.0 / k)
        self.da_target = torch.full((k,), 1.0 / k)
        self.updates = torch.tensor(0, dtype=torch.int64)
        self.pending: dict[str, torch.Tensor] | None = None  # the last step's proposed state

    @property
    def stateful(self) -> bool:
        return self.threshold != "fixed" or self.dist_align

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {name: getattr(self, name).detach().cpu().clone() for name in _STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in _STATE:
            setattr(self, name, state[name].clone())
        self.pending = None

    def commit(self) -> None:
        """Keep the state the last call proposed (its step was taken); no-op without one."""
        for name, value in (self.pending or {}).items():
            setattr(self, name, value)
        self.pending = None

    def discard(self) -> None:
        """Drop the state the last call proposed (its step was skipped)."""
        self.pending = None

    def _to(self, device) -> None:
        for name in _STATE:
            setattr(self, name, getattr(self, name).to(device))

    # ---- per step ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, weak_logits: torch.Tensor, labeled_targets: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """weak_logits: (N, K); labeled_targets: (M,) int64 (read by dist_align only).
        Returns (pseudo-labels (N,) int64, weights (N,) float32 in [0, 1], terms to log); the
        updated state waits in ``pending`` for ``commit()`` or ``discard()``."""
        probs = torch.softmax(at_least_fp32(weak_logits.detach()).float(), dim=1)
        if not self.stateful:
            confidence, pseudo = probs.max(dim=1)
            return pseudo, (confidence >= self.fixed_tau).float(), {}
        if self.pending is not None:
            raise RuntimeError("PseudoLabeler: the previous step's state was neither committed "
                               "nor discarded (commit() after a step taken, discard() after a "
                               "skipped one)")
        self._to(probs.device)
        m, k = self.momentum, self.num_classes
        new: dict[str, torch.Tensor] = {"updates": self.updates + 1}
        reduced: list[torch.Tensor] = []  # every rank's summed statistics, for the finite check
        if self.dist_align:
            counts = torch.bincount(labeled_targets, minlength=k).float() if labeled_targets \
                is not None else torch.zeros(k, device=probs.device)
            n, prob_sum, count_sum = self._summed(probs.shape[0], probs.sum(0), counts)
            reduced += [prob_sum, count_sum]
            count_sum = count_sum + 1.0  # smoothed once, after the sum over ranks
            batch_model, batch_target = prob_sum / n, count_sum / count_sum.sum()
            first = self.updates == 0  # both start from the first batch (no host read)
            new["da_model"] = torch.where(first, batch_model,
                                          m * self.da_model + (1 - m) * batch_model)
            new["da_target"] = torch.where(first, batch_target,
                                           m * self.da_target + (1 - m) * batch_target)
            probs = probs * (new["da_target"] + 1e-6) / (new["da_model"] + 1e-6)
            probs = probs / probs.sum(dim=1, keepdim=True)
        confidence, pseudo = probs.max(dim=1)
        terms: dict[str, torch.Tensor] = {}
        if self.threshold == "fixed":
            weight = (confidence >= self.fixed_tau).float()
        else:
            n, conf_sum, conf_sq, prob_sum = self._summed(probs.shape[0], confidence.sum(),
                                                          (confidence ** 2).sum(), probs.sum(0))
            reduced += [conf_sum, conf_sq, prob_sum]
            mean = conf_sum / n
            if self.threshold == "freematch":
                new["tau"] = m * self.tau + (1 - m) * mean
                new["p_model"] = m * self.p_model + (1 - m) * prob_sum / n
                class_tau = new["p_model"] / new["p_model"].max() * new["tau"]
                weight = (confidence >= class_tau[pseudo]).float()
                terms["threshold"] = class_tau.mean()
            else:  # softmatch
                var = (conf_sq - n * mean ** 2) / (n - 1).clamp(min=1)
                new["mu"] = m * self.mu + (1 - m) * mean
                new["var"] = m * self.var + (1 - m) * var
                gap = (confidence - new["mu"]).clamp(max=0.0)
                weight = torch.exp(-gap ** 2 / (2 * new["var"] / self.n_sigma ** 2))
                terms["threshold"] = new["mu"].clone()
        # A NaN weight (a 0/1 comparison alone would drop it) makes the loss non-finite on every
        # rank alike, since the statistics are the same on all: the step is skipped, not taken.
        finite = torch.isfinite(torch.cat([r.reshape(-1) for r in reduced])).all()
        weight = torch.where(finite, weight, torch.full_like(weight, float("nan")))
        self.pending = new
        return pseudo, weight, terms

    def _summed(self, count: int, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(count, *sums) summed over the ranks (one ``reduce_sum``), as float32 tensors; the
        batch's own without a ``reduce_sum``."""
        flat = torch.cat([torch.tensor([float(count)], device=sums[0].device)]
                         + [s.float().reshape(-1) for s in sums])
        if self.reduce_sum is not None:
            flat = self.reduce_sum(flat)
        out, offset = [flat[0]], 1
        for s in sums:
            out.append(flat[offset:offset + s.numel()].reshape(s.shape))
            offset += s.numel()
        return tuple(out)


def build_pseudo_labeler(loss_config, num_classes: int = 2,
                         reduce_sum: ReduceSum | None = None) -> PseudoLabeler:
    """The PseudoLabeler of a LossConfig (losses.threshold, tau, threshold_momentum, dist_align);
    ``reduce_sum`` sums its batch statistics over the ranks (the strategy's all_reduce_sum)."""
    return PseudoLabeler(loss_config.threshold, loss_config.tau, loss_config.threshold_momentum,
                         loss_config.dist_align, num_classes, reduce_sum=reduce_sum)
