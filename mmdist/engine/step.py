"""One training step's losses over the five streams, for any variant.

The network runs once per step (MixMatch adds a no-grad label-guessing pass): the labeled and
strong classification images go through the classifier together, the weak view gives FixMatch's
pseudo-labels without gradient, and only the segmentation images (labeled, plus unlabeled for the
consistency term) go through the decoder and the saliency bridge. With losses.seg_unlabeled: w2s
the unlabeled ones go in as strong views (mmdist.losses.w2s), and their weak views in the same
forward, without gradient (plus the feature-perturbation stream when it is on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdist import losses as L
from mmdist.losses import w2s as W
from mmdist.data.step_batch import StepBatch
from mmdist.model.saliency import at_least_fp32
from mmdist.model.variants import VariantSpec


def training_losses(model, batch: StepBatch, spec: VariantSpec, loss_config, step: int,
                    pseudo_labeler: L.PseudoLabeler | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (total loss, detached terms for logging) for one step.

    ``model`` may be the bare MultiMixNet or a DDP/DeepSpeed wrapper of it. ``pseudo_labeler``
    holds the classifier's threshold/alignment state across steps (the trainer's, checkpointed);
    the caller commits or discards the update it proposes once the step was taken or skipped.
    None builds a fresh one from ``loss_config``: exact for the stateless 'fixed' threshold, an
    error for a stateful one (a fresh state every step would silently reset it).
    """
    if spec.ssl == "mixmatch":
        return _mixmatch_losses(model, batch, loss_config, step)

    cls_images = seg_images = pseudo_images = None
    n_labeled = n_seg_labeled = 0
    if spec.classifier:
        parts = [batch.cls_labeled]
        n_labeled = batch.cls_labeled.shape[0]
        if spec.ssl == "fixmatch":
            parts.append(batch.cls_unlabeled_strong)
            pseudo_images = batch.cls_unlabeled_weak
        cls_images = torch.cat(parts) if len(parts) > 1 else parts[0]
    unlabeled_seg = spec.unlabeled_seg_loss(loss_config)
    weak_views = {}
    if spec.decoder:
        n_seg_labeled = batch.seg_labeled.shape[0]
        seg_images = batch.seg_labeled
        if unlabeled_seg == "kl":
            seg_images = torch.cat([batch.seg_labeled, batch.seg_unlabeled])
        elif unlabeled_seg == "w2s":
            strong = W.strong_views(batch.seg_unlabeled, loss_config)
            seg_images = torch.cat([batch.seg_labeled, strong.images])
            weak_views = {"seg_weak_images": batch.seg_unlabeled,
                          "feature_dropout": loss_config.w2s_feature_dropout}

    out = model(cls_images=cls_images, seg_images=seg_images, pseudo_images=pseudo_images,
                **weak_views)
    terms: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=(cls_images if cls_images is not None else seg_images).device)
    if spec.classifier:
        terms["ce"] = L.supervised_ce(out.cls_logits[:n_labeled], batch.cls_labeled_target)
        total = total + terms["ce"]
        if spec.ssl == "fixmatch":
            labeler = pseudo_labeler or _stateless_labeler(loss_config)
            pseudo, weight, schedule_terms = labeler(out.pseudo_logits, batch.cls_labeled_target)
            terms["fixmatch"] = L.weighted_pseudo_ce(out.cls_logits[n_labeled:], pseudo, weight)
            terms["mask_ratio"] = weight.mean()
            terms.update(schedule_terms)
            total = total + loss_config.lambda_u * terms["fixmatch"]
    if spec.decoder:
        labeled_logits = out.seg_logits[:n_seg_labeled]
        terms["dice"] = L.dice_loss(torch.sigmoid(at_least_fp32(labeled_logits)), batch.seg_labeled_mask)
        total = total + loss_config.lambda_d * terms["dice"]
        if unlabeled_seg == "w2s":
            terms.update(W.w2s_losses(out.seg_logits[n_seg_labeled:], out.seg_weak_logits, strong,
                                      out.seg_fp_logits, loss_config.w2s_threshold))
            total = total + loss_config.w2s_weight * terms["w2s"]
        elif unlabeled_seg == "kl":
            kl = L.bernoulli_kl if loss_config.kl == "bernoulli" else L.reference_softmax_kl
            terms["kl"] = kl(labeled_logits, out.seg_logits[n_seg_labeled:])
            total = total + loss_config.lambda_kl * terms["kl"]
    terms["total"] = total
    return total, {k: v.detach() for k, v in terms.items()}


def _stateless_labeler(loss_config) -> L.PseudoLabeler:
    labeler = L.build_pseudo_labeler(loss_config)
    if labeler.stateful:
        raise ValueError(f"losses.threshold={loss_config.threshold!r}, losses.dist_align="
                         f"{loss_config.dist_align} keep state across steps: pass the run's "
                         f"PseudoLabeler to training_losses (and commit it after each step taken)")
    return labeler


def _mixmatch_losses(model, batch: StepBatch, loss_config, step: int):
    """MixMatch (K=2 weak views): guess, sharpen, MixUp labeled with unlabeled, train on the mix."""
    labeled, targets = batch.cls_labeled, batch.cls_labeled_target
    views = torch.cat([batch.cls_unlabeled_weak, batch.cls_unlabeled_weak2])
    n_u = batch.cls_unlabeled_weak.shape[0]
    guess_out = model(pseudo_images=views)
    probs = torch.softmax(at_least_fp32(guess_out.pseudo_logits), dim=1)
    guess = L.sharpen((probs[:n_u] + probs[n_u:]) / 2, loss_config.mixmatch_temperature)
    x_targets = F.one_hot(targets, num_classes=probs.shape[1]).to(probs.dtype)
    all_inputs = torch.cat([labeled, views])
    all_targets = torch.cat([x_targets, guess, guess])
    lam = L.mixup_lambda(loss_config.mixmatch_alpha)
    order = torch.randperm(all_inputs.shape[0])
    mixed_inputs = lam * all_inputs + (1 - lam) * all_inputs[order.to(all_inputs.device)]
    mixed_targets = lam * all_targets + (1 - lam) * all_targets[order.to(all_targets.device)]
    logits = model(cls_images=mixed_inputs).cls_logits
    n_x = labeled.shape[0]
    loss_x, loss_u = L.mixmatch_loss(logits[:n_x], mixed_targets[:n_x], logits[n_x:],
                                     mixed_targets[n_x:])
    weight = loss_config.mixmatch_lambda_u * L.linear_rampup(step, loss_config.mixmatch_rampup_steps)
    total = loss_x + weight * loss_u
    terms = {"ce": loss_x, "mixmatch_u": loss_u, "total": total}
    return total, {k: v.detach() for k, v in terms.items()}
