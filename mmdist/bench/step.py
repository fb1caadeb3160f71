"""Training-step throughput of one variant on random data (B images per stream, five streams).

Prints img_per_s (all stream images per second), step_s_median, peak_rss_mb and params (and, on
CUDA, peak_gpu_mib: torch.cuda.max_memory_allocated over a step); with --compare, the three
saliency modes and the reference step structure interleaved in one process, with their ratios.
Every step is timed between two device synchronisations. ``--device cuda --precision bf16``
measures a GPU; ``--compile`` runs the encoder, classifier and decoder through torch.compile
where the saliency mode allows it (none, detached: torch.compile has no double backward, which
the differentiable saliency needs, so that arm runs eagerly and says so).
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import torch

from mmdist.config import EngineConfig, LossConfig, ModelConfig
from mmdist.data.step_batch import StepBatch
from mmdist.engine.devices import configure_numerics
from mmdist.engine.precision import autocast
from mmdist.engine.single import SingleProcessStrategy
from mmdist.engine.step import training_losses
from mmdist.model import VARIANTS, build_model
from mmdist.model.blocks import PointwiseConv, WordDropout


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
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC activations for the mmdist arms (engine.channels_last=true)")
    parser.add_argument("--compare", action="store_true",
                        help="time none / detached / differentiable and the reference step "
                             "interleaved in one run and print their ratios")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network's parts (saliency none and detached)")


COMPILE_REFUSED = {"differentiable": "not compiled: torch.compile has no double backward, which "
                                     "the differentiable saliency needs"}


def compile_parts(model) -> None:
    """torch.compile the encoder, classifier and decoder in place (the forward's saliency call,
    torch.autograd.grad on the input, stays eager between them)."""
    # The saliency's input gradient keeps the encoder graph (retain_graph=True) for the losses'
    # backward; compiled backwards that donate their buffers refuse a retained graph, and torch
    # names this switch as the way out.
    import torch._functorch.config

    torch._functorch.config.donated_buffer = False
    for name in ("encoder", "classifier", "decoder"):
        part = getattr(model, name)
        if part is not None:
            setattr(model, name, torch.compile(part))


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


def with_torch_layers(model):
    """The reference arm's layers stay what they were: torch's nn.Dropout for mmdist's
    WordDropout, nn.InstanceNorm2d for its one-group-per-channel GroupNorm, nn.Conv2d for its
    PointwiseConv head and an out-of-place LeakyReLU (mmdist.model.blocks runs it in place), so that arm does not speed up with mmdist's own
    path. The weights are kept."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, WordDropout):
                setattr(module, name, torch.nn.Dropout(child.p))
            elif isinstance(child, torch.nn.GroupNorm):  # mmdist's instance norm
                setattr(module, name, torch.nn.InstanceNorm2d(child.num_channels))
            elif isinstance(child, torch.nn.LeakyReLU):
                setattr(module, name, torch.nn.LeakyReLU(child.negative_slope))
            elif isinstance(child, PointwiseConv):
                plain = torch.nn.Conv2d(child.in_channels, child.out_channels, 1)
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)
    return model


def _arm(args, saliency: str, reference: bool, channels_last: bool):
    """One thing to time: a model on its strategy (device, precision), a fixed random batch and
    its loss function."""
    torch.manual_seed(0)
    model_config = ModelConfig(variant=args.variant, saliency=saliency, width=args.width)
    spec = VARIANTS[args.variant]
    model = build_model(model_config)
    if reference:
        model = with_torch_layers(model)
    mode = model_config.resolved_saliency
    data = random_batch(spec.streams, args.batch, args.size, torch.Generator().manual_seed(0))
    engine = EngineConfig(strategy="single", device=args.device, precision=args.precision)
    configure_numerics(engine, deterministic=False)  # the training step's GPU settings
    strategy = SingleProcessStrategy(engine)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = data.to(strategy.device, channels_last=channels_last)
    compiled = "eager"
    if args.compile and not reference:
        compiled = COMPILE_REFUSED.get(mode, "compiled")
        if compiled == "compiled":
            compile_parts(model)
    wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-4))
    losses = LossConfig()
    if reference:
        loss_fn = lambda step: reference_style_loss(wrapped, data, losses)  # noqa: E731
    else:
        loss_fn = lambda step: training_losses(wrapped, data, spec, losses, step)  # noqa: E731
    name = "reference" if reference else mode
    if channels_last:
        name += "_nhwc"
    return {"name": name, "model": model, "strategy": strategy, "loss": loss_fn,
            "images": data.image_count, "times": [], "peak_gpu_mib": 0.0, "compile": compiled}


def _time_step(arm, step: int) -> float:
    strategy = arm["strategy"]
    cuda = strategy.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(strategy.device)
    strategy.synchronize()
    tick = time.perf_counter()
    with autocast(strategy.device, strategy.precision):
        loss, _ = arm["loss"](step)
    strategy.backward_step(loss)
    strategy.synchronize()  # the queued kernels have run: the clock measures the work
    elapsed = time.perf_counter() - tick
    if cuda:
        peak = torch.cuda.max_memory_allocated(strategy.device) / 2**20
        arm["peak_gpu_mib"] = max(arm["peak_gpu_mib"], peak)
    return elapsed


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.compare:
        if args.variant != "multimix":
            raise SystemExit("--compare times multimix's saliency modes against the reference step")
        arms = [_arm(args, mode, False, args.channels_last)
                for mode in ("none", "detached", "differentiable")]
        if args.channels_last:  # the same step in NCHW too, to show what the memory order does
            arms.append(_arm(args, "detached", False, False))
        # The reference structure keeps the authors' default (contiguous NCHW) memory order.
        arms.append(_arm(args, "detached", True, False))
    else:
        if args.reference_step and (args.variant != "multimix" or
                                    args.saliency not in ("auto", "detached")):
            raise SystemExit("--reference-step times the authors' MultiMix step: variant multimix, "
                             "saliency detached")
        arms = [_arm(args, args.saliency, args.reference_step,
                     args.channels_last and not args.reference_step)]
    # Interleave the arms step by step so that they share whatever else the machine is doing.
    for step in range(args.warmup + args.steps):
        for arm in arms:
            elapsed = _time_step(arm, step)
            if step >= args.warmup:
                arm["times"].append(elapsed)
    common = {"variant": args.variant, "size": args.size, "batch_per_stream": args.batch,
              "threads": args.threads, "steps": args.steps, "device": args.device,
              "precision": args.precision, "load_average_1min": os.getloadavg()[0],
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.device == "cuda":
        common["gpu"] = torch.cuda.get_device_name(arms[0]["strategy"].device)
    results = {}
    for arm in arms:
        median = statistics.median(arm["times"])
        results[arm["name"]] = {"step_s_median": median, "img_per_s": arm["images"] / median,
                                "images_per_step": arm["images"], "compile": arm["compile"],
                                "params": sum(p.numel() for p in arm["model"].parameters())}
        if args.device == "cuda":
            results[arm["name"]]["peak_gpu_mib"] = arm["peak_gpu_mib"]
    if not args.compare:
        only = next(iter(results.values()))
        return {**common, "saliency": arms[0]["name"] if not args.reference_step else "detached",
                "step_structure": "reference" if args.reference_step else "mmdist", **only}
    base = results["reference"]["img_per_s"]
    suffix = "_nhwc" if args.channels_last else ""
    none = results[f"none{suffix}"]["img_per_s"]
    ratios = {}
    for name, result in results.items():
        if name != "reference":
            ratios[f"{name}_vs_reference"] = result["img_per_s"] / base
        if name not in ("reference", f"none{suffix}"):
            ratios[f"{name}_vs_none{suffix}"] = result["img_per_s"] / none
    return {**common, "arms": results, "ratios": ratios}
