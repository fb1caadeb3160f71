"""Look at single X-rays: class probabilities, a lung mask and a saliency map per image.

    python -m mmdist.predict MODEL IMAGE_OR_FOLDER... [--out DIR] [--device auto|cpu|cuda]
                             [--weights auto|ema|raw] [--saliency-scale per-image|shared]

MODEL is a run directory (its best.pt when it kept one, else its latest checkpoint, as evaluate
picks), a checkpoint file, or a file written by ``python -m mmdist.export`` (TorchScript or ONNX;
its weights were chosen at export, so --weights does not apply). Each further argument is an image
file or a folder, which stands for its image files (PNG, JPEG, BMP, TIFF, GIF, JSRT .img, DICOM;
not its subfolders), sorted by name. Each image is decoded to 8-bit grayscale, resized to the
model's training size, run through the network (a checkpoint's EMA weights when it has them,
unless --weights raw), and the mask and saliency are resized back to the file's own size. stdout
gets one JSON line per image:
{"image", "probabilities": {"normal", "pneumonia"}, "predicted", "lung_fraction", "mask",
"overlay", "saliency", "saliency_vmax"} (keys the model cannot fill are left out: no mask or
overlay without a decoder, no probabilities or saliency without a classifier). DIR receives, per
image, <name>_mask.png (0/255, the image's size), <name>_overlay.png (the X-ray at its own size
with the predicted mask's boundary in red) and <name>_saliency.png (the saliency over the X-ray,
inferno, with a colour bar from 0 to saliency_vmax: the map's own maximum with --saliency-scale
per-image, the largest maximum over all images of the call with shared, so that the colours of
different images compare). A file that cannot be read is reported on stderr with its name; the
others are still predicted, and the exit status is 1. A folder without images stops the call
(exit 2).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmdist.config import ConfigError
from mmdist.data.adapters.common import IMAGE_SUFFIXES, list_images
from mmdist.data.imageset import CLASS_NAMES
from mmdist.data.imaging import CorruptImage, decode_gray, resize_gray
from mmdist.engine.devices import resolve_device
from mmdist.engine.user_errors import report, user_errors
from mmdist.evaluation.plots import boundary_overlay, save_figure, saliency_overlay_figure
from mmdist.evaluation.trained_model import default_checkpoint, load_model
from mmdist.export.graph import eager_outputs
from mmdist.export.runtime import ExportedModel, export_format

PREDICT_SUFFIXES = IMAGE_SUFFIXES + (".dicom",)
"""File endings a folder argument is searched for (the adapters' list, and .dicom)."""


@dataclass
class Prediction:
    probabilities: Optional[np.ndarray]
    """(2,) float: normal, pneumonia; None without a classifier."""
    mask: Optional[np.ndarray]
    """(H, W) bool at the input's own size; None without a decoder."""
    saliency: Optional[np.ndarray]
    """(H, W) float32 >= 0 at the input's own size; None without a classifier."""


def predict_gray(network, gray: np.ndarray, image_size: int) -> Prediction:
    """Run ``network`` on one (H, W) uint8 grayscale image (any size). network: uint8
    (N, 1, S, S) -> {'probabilities', 'mask', 'saliency'} as mmdist.export.graph.OUTPUTS (an
    ExportedModel, or eager_outputs bound to a model)."""
    height, width = gray.shape
    x = torch.from_numpy(np.array(resize_gray(gray, image_size)))[None, None]
    out = network(x)

    def to_input_size(t: torch.Tensor) -> np.ndarray:
        return F.interpolate(t.float().cpu(), size=(height, width), mode="bilinear",
                             align_corners=False)[0, 0].numpy()

    probabilities, mask, saliency = (out.get(name) for name in ("probabilities", "mask", "saliency"))
    return Prediction(
        probabilities=probabilities[0].float().cpu().numpy() if probabilities is not None else None,
        # Threshold the upsampled logits (not an upsampled 0/1 mask): smooth edges at full size.
        # The eps keeps saturated probabilities finite (far from the threshold either way).
        mask=to_input_size(torch.logit(mask, eps=1e-6)) > 0 if mask is not None else None,
        saliency=np.maximum(to_input_size(saliency), 0) if saliency is not None else None,
    )


def load_network(source: str | Path, device, weights: str = "auto") -> tuple[Callable, int]:
    """(network for predict_gray, its training size) from a run directory, a checkpoint file or
    an exported file. Input errors (mmdist.engine.user_errors) name the path or the option."""
    source = Path(source)
    if export_format(source) is not None:
        if weights != "auto":
            raise ConfigError(f"{source}: an exported file keeps the weights chosen at export "
                              f"(--weights {weights} applies to checkpoints only)")
        exported = ExportedModel(source, device)
        return exported, int(exported.metadata["image_size"])
    checkpoint = default_checkpoint(source) if source.is_dir() else source
    model, config, _ = load_model(checkpoint, device, weights)
    return functools.partial(eager_outputs, model), config.data.image_size


def expand_inputs(names: list[str]) -> list[Path]:
    """Image paths in the order given, each folder replaced by its image files (sorted; hidden
    files and subfolders skipped). Raises ValueError naming a folder that holds no image."""
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = list_images(path, suffixes=PREDICT_SUFFIXES)
            if not found:
                raise ValueError(f"{path}: no images in this folder "
                                 f"({', '.join(PREDICT_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def _write_saliency(line: dict, gray: np.ndarray, saliency: np.ndarray, vmax: float) -> None:
    """The saliency over the X-ray with its colour bar (0..vmax) to line['saliency']."""
    line["saliency_vmax"] = vmax
    name = Path(line["image"]).name
    save_figure(saliency_overlay_figure(gray, saliency, vmax=vmax, title=name), line["saliency"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run directory, a checkpoint file (RUN_DIR/checkpoints/"
                        "step_*.pt) or a file written by mmdist.export")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="PNG, JPEG or DICOM files, or folders of them (sorted by name)")
    parser.add_argument("--out", default="predictions",
                        help="folder for the mask, overlay and saliency PNGs (default: "
                        "%(default)s, in the working directory)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                        help="the checkpoint's EMA or raw weights (auto: EMA when it has them)")
    parser.add_argument("--saliency-scale", default="per-image", choices=["per-image", "shared"],
                        help="top of each saliency colour bar: the map's own maximum (per-image, "
                        "the default) or the largest maximum over all images of this call "
                        "(shared: colours compare across images; the maps are kept in memory "
                        "and the JSON lines come after the last image)")
    args = parser.parse_args(argv)
    try:
        paths = expand_inputs(args.images)
    except ValueError as exc:  # only the empty-folder message; the model is not loaded yet
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device, key="--device")
        network, image_size = load_network(args.model, device, args.weights)
    except user_errors() as exc:  # a bug of mmdist keeps its traceback
        return report("predict", exc)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    shared = args.saliency_scale == "shared"
    failed, used, pending = 0, set(), []
    for path in paths:
        try:
            gray, _ = decode_gray(path.read_bytes(), path.name)
        except (OSError, CorruptImage) as exc:
            print(f"predict: {path}: cannot read the image ({exc})", file=sys.stderr)
            failed += 1
            continue
        result = predict_gray(network, gray, image_size)
        stem = _unique_stem(path, used)
        line: dict = {"image": str(path)}
        if result.probabilities is not None:
            line["probabilities"] = {c: float(p) for c, p in zip(CLASS_NAMES, result.probabilities)}
            line["predicted"] = CLASS_NAMES[int(result.probabilities.argmax())]
        if result.mask is not None:
            line["lung_fraction"] = float(result.mask.mean())
            line["mask"] = str(out_dir / f"{stem}_mask.png")
            Image.fromarray(result.mask.astype(np.uint8) * 255).save(line["mask"])
            line["overlay"] = str(out_dir / f"{stem}_overlay.png")
            # No reference mask here: an empty one leaves only the prediction's red outline.
            overlay = boundary_overlay(gray, np.zeros_like(result.mask), result.mask)
            Image.fromarray(overlay).save(line["overlay"])
        if result.saliency is not None:
            line["saliency"] = str(out_dir / f"{stem}_saliency.png")
            if shared:  # drawn once every map's maximum is known
                pending.append((line, gray, result.saliency))
                continue
            _write_saliency(line, gray, result.saliency, float(result.saliency.max()))
        print(json.dumps(line), flush=True)
    vmax = max((float(saliency.max()) for _, _, saliency in pending), default=0.0)
    for line, gray, saliency in pending:
        _write_saliency(line, gray, saliency, vmax)
        print(json.dumps(line), flush=True)
    return 1 if failed else 0
