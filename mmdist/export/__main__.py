"""Entry point: ``python -m mmdist.export RUN_OR_CHECKPOINT --format torchscript|onnx [--out FILE]
[--weights auto|ema|raw]``.

Writes the trained network as one file that runs without mmdist. Input: uint8 grayscale images
(N, 1, S, S) at the run's training size S (data.image_size), any batch size N; the normalisation
is inside. Outputs (float32): 'probabilities' (N, 2) over (normal, pneumonia), 'mask' (N, 1, S, S)
lung-mask probabilities, 'saliency' (N, 1, S, S) = |d max-class-logit / d input| (in the model's
input units, [-1, 1]); a variant without a classifier has no probabilities or saliency, one
without a decoder no mask.

RUN_OR_CHECKPOINT: a run directory (its best.pt when it kept one, else its latest checkpoint, as
evaluate picks) or a checkpoint file; the weights are its EMA's when it has them (--weights).
TorchScript (``torch.jit.load(FILE)(images)`` returns a dict) holds every variant, the saliency
computed inside the graph by autograd; call it outside torch.inference_mode(). ONNX (input
'images', outputs named as above) expresses the saliency's input gradient in forward operators
(mmdist.export.onnx_export); a model where that fails is refused with a pointer to TorchScript.
Before it reports success the file is loaded back and compared with the eager model on a batch of
three images; a difference above 1e-4 fails the export (exit 1) and removes the file.
Default FILE: RUN_DIR/export/model.torchscript.pt or .onnx (beside a checkpoint file given
directly: CHECKPOINT_STEM.torchscript.pt or .onnx).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mmdist.config.errors import InputNotFoundError
from mmdist.engine.user_errors import report, user_errors

TOLERANCE = 1e-4
"""Largest absolute difference from the eager model that an export may show."""
SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


def default_out(source: Path, fmt: str) -> Path:
    if source.is_dir():
        return source / "export" / f"model{SUFFIX[fmt]}"
    return source.with_name(source.stem + SUFFIX[fmt])


def check_images(image_size: int, count: int = 3) -> torch.Tensor:
    """uint8 (count, 1, S, S): smooth bright ellipses on noise, seeded (a batch size the trace
    never saw, so a batch dimension fixed by mistake fails)."""
    generator = torch.Generator().manual_seed(0)
    axis = torch.linspace(-1, 1, image_size)
    body = (axis[None, :] ** 2 / 0.8 + axis[:, None] ** 2 / 0.9 < 1).float() * 150
    noise = torch.rand(count, 1, image_size, image_size, generator=generator) * 100
    return (body + noise).clamp(0, 255).to(torch.uint8)


def largest_differences(exported: dict, eager: dict) -> dict[str, float]:
    """{output name: max |exported - eager|}; raises when the two name different outputs."""
    if sorted(exported) != sorted(eager):
        raise RuntimeError(f"exported outputs {sorted(exported)} != eager {sorted(eager)}")
    return {name: float((exported[name].float() - eager[name].float()).abs().max())
            for name in eager}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                        help="a run directory or a checkpoint file")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIX))
    parser.add_argument("--out", help="the file to write (default: see above)")
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                        help="the checkpoint's EMA or raw weights (auto: EMA when it has them)")
    args = parser.parse_args(argv)
    from mmdist.data.imageset import CLASS_NAMES
    from mmdist.evaluation.trained_model import default_checkpoint, load_model
    from mmdist.export.graph import eager_outputs, output_names
    from mmdist.export.runtime import ExportedModel

    source = Path(args.source)
    try:
        checkpoint = default_checkpoint(source) if source.is_dir() else source
        if not checkpoint.is_file():
            raise InputNotFoundError(f"{checkpoint}: no such run directory or checkpoint file")
        model, config, state = load_model(checkpoint, "cpu", args.weights)
    except user_errors() as exc:  # a bug of mmdist keeps its traceback
        return report("export", exc)
    out = Path(args.out) if args.out else default_out(source, args.format)
    size = config.data.image_size
    metadata = {"format": args.format, "variant": config.model.variant, "image_size": size,
                "input": f"images: uint8 (N, 1, {size}, {size}), grayscale 0..255",
                "outputs": list(output_names(model)), "class_names": list(CLASS_NAMES),
                "checkpoint": str(checkpoint), "step": state.get("step"),
                "weights": state["weights_used"]}
    if args.format == "torchscript":
        from mmdist.export.torchscript import save_torchscript

        save_torchscript(model, size, metadata, out)
    else:
        from mmdist.export.onnx_export import save_onnx

        try:
            save_onnx(model, size, metadata, out)
        except NotImplementedError as exc:
            print(f"export: {checkpoint}: model.variant={config.model.variant} cannot be written "
                  f"as ONNX ({exc}); use --format torchscript", file=sys.stderr)
            return 2
    images = check_images(size)
    differences = largest_differences(ExportedModel(out)(images), eager_outputs(model, images))
    print(json.dumps({"file": str(out), **metadata, "max_abs_difference": differences}))
    if max(differences.values()) > TOLERANCE:
        out.unlink()
        hint = "; use --format torchscript" if args.format == "onnx" else ""
        print(f"export: {out}: outputs differ from the eager model by more than {TOLERANCE} "
              f"({differences}); file removed{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
