"""Training-step throughput of one variant on random data (B images per stream, five streams).

Prints img_per_s (all stream images per second), step_s_median, peak_rss_mb and params.
"""

from __future__ import annotations

import resource
import statistics
import time

import torch

from mmdist.config import LossConfig, ModelConfig
from mmdist.data.streams import StepBatch
from mmdist.engine.step import training_losses
from mmdist.model import VARIANTS, build_model


def add_arguments(parser) -> None:
    parser.add_argument("--variant", default="multimix", choices=sorted(VARIANTS))
    parser.add_argument("--saliency", default="auto",
                        choices=["auto", "none", "detached", "differentiable"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=10, help="images per stream")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--reference-step", action="store_true",
                        help="time the authors' step structure instead (multimix only): a separate "
                             "eval-mode encoder pass with a full backward for the saliency, then "
                             "encoder and decoder on all five streams")


def random_batch(streams, batch: int, size: int, generator: torch.Generator) -> StepBatch:
    out = StepBatch()
    for name in streams:
        setattr(out, name, torch.rand((batch, 1, size, size), generator=generator) * 2 - 1)
    if out.seg_labeled is not None:
        out.seg_labeled_mask = (torch.rand((batch, 1, size, size), generator=generator) > 0.5).float()
    if out.cls_labeled is not None:
        out.cls_labeled_target = torch.randint(0, 2, (batch,), generator=generator)
    return out


def reference_style_loss(model, batch: StepBatch, losses: LossConfig):
    """The authors' step structure, rebuilt on our modules to measure against side by side.

    All five streams are concatenated; the saliency comes from an extra eval-mode encoder pass
    whose full backward also fills (then discards) every parameter gradient; the decoder then runs
    on all 50 images, although only the segmentation images need it.
    """
    from mmdist import losses as L

    parts = [batch.seg_labeled, batch.seg_unlabeled, batch.cls_labeled, batch.cls_unlabeled_weak,
             batch.cls_unlabeled_strong]
    x = torch.cat(parts)
    n = batch.seg_labeled.shape[0]
    probe = x.detach().clone().requires_grad_(True)
    model.eval()
    _, logits = model.encode(probe)
    logits.max(dim=1).values.sum().backward()
    saliency = probe.grad.abs()
    model.zero_grad(set_to_none=True)
    model.train()
    features, logits = model.encode(x)
    seg_logits = model.decoder(features, torch.cat([x, saliency], dim=1))
    ce = L.supervised_ce(logits[2 * n:3 * n], batch.cls_labeled_target)
    fixmatch, _ = L.fixmatch_loss(logits[3 * n:4 * n], logits[4 * n:], losses.tau)
    dice = L.dice_loss(torch.sigmoid(seg_logits[:n]), batch.seg_labeled_mask)
    kl = L.bernoulli_kl(seg_logits[:n], seg_logits[n:2 * n])
    total = ce + losses.lambda_u * fixmatch + losses.lambda_d * dice + losses.lambda_kl * kl
    return total, {}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.reference_step and (args.variant != "multimix" or args.saliency not in ("auto", "detached")):
        raise SystemExit("--reference-step times the authors' MultiMix step: variant multimix, "
                         "saliency detached")
    model_config = ModelConfig(variant=args.variant, saliency=args.saliency, width=args.width)
    spec = VARIANTS[args.variant]
    model = build_model(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = LossConfig()
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(spec.streams, args.batch, args.size, generator)
    times = []
    for step in range(args.warmup + args.steps):
        tick = time.perf_counter()
        if args.reference_step:
            loss, _ = reference_style_loss(model, batch, losses)
        else:
            loss, _ = training_losses(model, batch, spec, losses, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - tick)
    median = statistics.median(times)
    return {"variant": args.variant, "saliency": model_config.resolved_saliency, "size": args.size,
            "step_structure": "reference" if args.reference_step else "mmdist",
            "batch_per_stream": args.batch, "images_per_step": batch.image_count,
            "threads": args.threads, "steps": args.steps, "step_s_median": median,
            "img_per_s": batch.image_count / median,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "params": sum(p.numel() for p in model.parameters())}
