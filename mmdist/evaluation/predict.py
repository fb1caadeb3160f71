"""Look at single X-rays: class probabilities, a lung mask and a saliency map per image.

    python -m mmdist.predict CHECKPOINT IMAGE... [--out DIR] [--device cpu|cuda]
                             [--weights auto|ema|raw]

Images may be PNG, JPEG (anything Pillow reads) or DICOM. Each is decoded to 8-bit grayscale,
resized to the checkpoint's training size, run through the network (the checkpoint's EMA weights
when it has them, unless --weights raw), and the mask and saliency are resized back to the file's
own size. stdout gets one JSON line per image:
{"image", "probabilities": {"normal", "pneumonia"}, "predicted", "lung_fraction", "mask",
"saliency"} (keys the model cannot fill are left out: no mask without a decoder, no probabilities
or saliency without a classifier). DIR receives <name>_mask.png (0/255) and <name>_saliency.png
(inferno colour map, each map scaled to its own maximum). A file that cannot be read is reported
on stderr with its name; the others are still predicted, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmdist.config import ConfigError
from mmdist.data.imageset import CLASS_NAMES
from mmdist.data.imaging import CorruptImage, decode_gray, resize_gray
from mmdist.data.streams import to_model_input
from mmdist.engine.devices import resolve_device
from mmdist.evaluation.loading import load_model
from mmdist.model.saliency import input_saliency


@dataclass
class Prediction:
    probabilities: Optional[np.ndarray]
    """(2,) float: normal, pneumonia; None without a classifier."""
    mask: Optional[np.ndarray]
    """(H, W) bool at the input's own size; None without a decoder."""
    saliency: Optional[np.ndarray]
    """(H, W) float32 >= 0 at the input's own size; None without a classifier."""


@torch.no_grad()
def predict_gray(model, gray: np.ndarray, image_size: int, device="cpu") -> Prediction:
    """Run the network on one (H, W) uint8 grayscale image (any size)."""
    height, width = gray.shape
    x = to_model_input(torch.from_numpy(np.array(resize_gray(gray, image_size)))[None, None]).to(device)
    logits = seg_logits = saliency = None
    if model.decoder is not None:
        out = model(seg_images=x)
        seg_logits, logits, saliency = out.seg_logits, out.seg_cls_logits, out.saliency
    elif model.classifier is not None:
        logits = model(cls_images=x).cls_logits
    if model.classifier is not None and saliency is None:
        # Variants without the bridge: the same map the bridge would feed the decoder.
        _, logits, saliency = input_saliency(x, model.encode, "detached")

    def to_input_size(t: torch.Tensor) -> np.ndarray:
        return F.interpolate(t.float(), size=(height, width), mode="bilinear",
                             align_corners=False)[0, 0].cpu().numpy()

    return Prediction(
        probabilities=torch.softmax(logits.float(), 1)[0].cpu().numpy() if logits is not None else None,
        # Threshold the upsampled logits (not an upsampled 0/1 mask): smooth edges at full size.
        mask=to_input_size(seg_logits) > 0 if seg_logits is not None else None,
        saliency=np.maximum(to_input_size(saliency), 0) if saliency is not None else None,
    )


def saliency_rgb(saliency: np.ndarray) -> np.ndarray:
    """(H, W) float >= 0 -> (H, W, 3) uint8 inferno heat map, scaled to its own maximum."""
    scaled = saliency / max(float(saliency.max()), 1e-12)
    return (matplotlib.colormaps["inferno"](scaled)[..., :3] * 255).round().astype(np.uint8)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file (RUN_DIR/checkpoints/step_*.pt)")
    parser.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files")
    parser.add_argument("--out", default="predictions", help="folder for the mask and saliency PNGs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                        help="the checkpoint's EMA or raw weights (auto: EMA when it has them)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        model, config, _ = load_model(args.checkpoint, device, args.weights)
    except (FileNotFoundError, RuntimeError, ConfigError) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for name in args.images:
        path = Path(name)
        try:
            gray, _ = decode_gray(path.read_bytes(), path.name)
        except (OSError, CorruptImage) as exc:
            print(f"predict: {path}: cannot read the image ({exc})", file=sys.stderr)
            failed += 1
            continue
        result = predict_gray(model, gray, config.data.image_size, device)
        stem = _unique_stem(path, used)
        line: dict = {"image": str(path)}
        if result.probabilities is not None:
            line["probabilities"] = {c: float(p) for c, p in zip(CLASS_NAMES, result.probabilities)}
            line["predicted"] = CLASS_NAMES[int(result.probabilities.argmax())]
        if result.mask is not None:
            line["lung_fraction"] = float(result.mask.mean())
            line["mask"] = str(out_dir / f"{stem}_mask.png")
            Image.fromarray(result.mask.astype(np.uint8) * 255).save(line["mask"])
        if result.saliency is not None:
            line["saliency"] = str(out_dir / f"{stem}_saliency.png")
            Image.fromarray(saliency_rgb(result.saliency)).save(line["saliency"])
        print(json.dumps(line), flush=True)
    return 1 if failed else 0
