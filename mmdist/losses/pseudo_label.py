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

Under DDP/DeepSpeed the batch statistics are summed over ranks before the update, so every rank
holds the same state; ``state_dict``/``load_state_dict`` carry it through checkpoints exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mmdist.model.saliency import at_least_fp32

_STATE = ("tau", "p_model", "mu", "var", "da_model", "da_target", "updates")


class PseudoLabeler:
    """Pseudo-labels and weights from weak-view logits; holds the schedule's running state."""

    def __init__(self, threshold: str = "fixed", tau: float = 0.7, momentum: float = 0.999,
                 dist_align: bool = False, num_classes: int = 2, n_sigma: float = 2.0):
        if threshold not in ("fixed", "freematch", "softmatch"):
            raise ValueError(f"unknown threshold schedule {threshold!r}")
        self.threshold, self.fixed_tau, self.momentum = threshold, tau, momentum
        self.dist_align, self.num_classes, self.n_sigma = dist_align, num_classes, n_sigma
        k = num_classes
        self.tau = torch.tensor(1.0 / k)
        self.p_model = torch.full((k,), 1.0 / k)
        self.mu = torch.tensor(1.0 / k)
        self.var = torch.tensor(1.0)
        self.da_model = torch.full((k,), 1.0 / k)
        self.da_target = torch.full((k,), 1.0 / k)
        self.updates = torch.tensor(0, dtype=torch.int64)

    @property
    def stateful(self) -> bool:
        return self.threshold != "fixed" or self.dist_align

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {name: getattr(self, name).detach().cpu().clone() for name in _STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in _STATE:
            setattr(self, name, state[name].clone())

    def _to(self, device) -> None:
        for name in _STATE:
            setattr(self, name, getattr(self, name).to(device))

    # ---- per step ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, weak_logits: torch.Tensor, labeled_targets: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """weak_logits: (N, K); labeled_targets: (M,) int64 (read by dist_align only).
        Returns (pseudo-labels (N,) int64, weights (N,) float32 in [0, 1], terms to log)."""
        probs = torch.softmax(at_least_fp32(weak_logits.detach()).float(), dim=1)
        if not self.stateful:
            confidence, pseudo = probs.max(dim=1)
            return pseudo, (confidence >= self.fixed_tau).float(), {}
        self._to(probs.device)
        m, k = self.momentum, self.num_classes
        if self.dist_align:
            counts = torch.bincount(labeled_targets, minlength=k).float() if labeled_targets \
                is not None else torch.zeros(k, device=probs.device)
            n, prob_sum, count_sum = _summed(probs.shape[0], probs.sum(0), counts)
            count_sum = count_sum + 1.0  # smoothed once, after the sum over ranks
            batch_model, batch_target = prob_sum / n, count_sum / count_sum.sum()
            first = bool(self.updates == 0)
            self.da_model = batch_model if first else m * self.da_model + (1 - m) * batch_model
            self.da_target = batch_target if first else m * self.da_target + (1 - m) * batch_target
            probs = probs * (self.da_target + 1e-6) / (self.da_model + 1e-6)
            probs = probs / probs.sum(dim=1, keepdim=True)
        confidence, pseudo = probs.max(dim=1)
        terms: dict[str, torch.Tensor] = {}
        if self.threshold == "fixed":
            weight = (confidence >= self.fixed_tau).float()
        else:
            n, conf_sum, conf_sq, prob_sum = _summed(probs.shape[0], confidence.sum(),
                                                     (confidence ** 2).sum(), probs.sum(0))
            mean = conf_sum / n
            if self.threshold == "freematch":
                self.tau = m * self.tau + (1 - m) * mean
                self.p_model = m * self.p_model + (1 - m) * prob_sum / n
                class_tau = self.p_model / self.p_model.max() * self.tau
                weight = (confidence >= class_tau[pseudo]).float()
                terms["threshold"] = class_tau.mean()
            else:  # softmatch
                var = (conf_sq - n * mean ** 2) / (n - 1).clamp(min=1)
                self.mu = m * self.mu + (1 - m) * mean
                self.var = m * self.var + (1 - m) * var
                gap = (confidence - self.mu).clamp(max=0.0)
                weight = torch.exp(-gap ** 2 / (2 * self.var / self.n_sigma ** 2))
                terms["threshold"] = self.mu.clone()
        self.updates = self.updates + 1
        return pseudo, weight, terms


def _summed(count: int, *sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(count, *sums) summed over the ranks of the default process group (one all-reduce), as
    float32 tensors; the batch's own when no group is running."""
    flat = torch.cat([torch.tensor([float(count)], device=sums[0].device)]
                     + [s.float().reshape(-1) for s in sums])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)
    out, offset = [flat[0]], 1
    for s in sums:
        out.append(flat[offset:offset + s.numel()].reshape(s.shape))
        offset += s.numel()
    return tuple(out)


def build_pseudo_labeler(loss_config, num_classes: int = 2) -> PseudoLabeler:
    """The PseudoLabeler of a LossConfig (losses.threshold, tau, threshold_momentum, dist_align)."""
    return PseudoLabeler(loss_config.threshold, loss_config.tau, loss_config.threshold_momentum,
                         loss_config.dist_align, num_classes)
