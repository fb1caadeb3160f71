"""Segmentation metrics per image: the fast definitions against scikit-image's (the reference).

Prints ms per image of hausdorff and ssim with each definition side by side, and of the whole of
``segmentation_scores`` (all six metrics; dice, jaccard, precision and recall come from the same
pixel counts either way) as ``ms_per_image_total`` and ``ms_per_image_total_reference``, with the
largest difference between the two definitions over all images. The fast timings are the median
of ``--repeats`` runs, the reference is run once (it is slow).

Masks: truths are the real Shenzhen lung masks resized to --size (when the shared data is there)
and random smooth blobs, half and half; each prediction is made from its truth the way a model
errs: shifted and grown or shrunk by a few pixels, and now and then a stray blob.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from mmdist.evaluation.mask_metrics import (
    hausdorff_scores, reference_average_hausdorff, reference_mask_ssim, ssim_scores)
from mmdist.evaluation.metrics import SEGMENTATION_METRICS, segmentation_scores


def shared_shenzhen() -> Path:
    """The shared Shenzhen lung-mask folder ($MMDIST_SHARED_DATA, else ../shared/data)."""
    repo = Path(__file__).resolve().parents[2]
    shared = Path(os.environ.get("MMDIST_SHARED_DATA", repo.parent / "shared" / "data"))
    return shared / "shenzhen-lungseg"


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the fast definitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--masks", type=Path, default=None,
                        help="folder with labels.csv and its 'mask' column (default: the shared "
                             "Shenzhen set when present; random blobs only without)")
    parser.add_argument("--seed", type=int, default=0)


def load_masks(folder: Path, size: int, limit: int | None = None) -> np.ndarray:
    """The masks named in folder/labels.csv ('mask' column), resized to size x size by nearest
    neighbour. Returns (K, size, size) bool."""
    with (folder / "labels.csv").open(newline="") as handle:
        names = [row["mask"] for row in csv.DictReader(handle)][:limit]
    masks = [np.asarray(Image.open(folder / name).convert("L").resize((size, size), Image.NEAREST))
             for name in names]
    return np.stack(masks) > 127


def random_masks(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(count, size, size) bool smooth blobs covering about a third of the image."""
    noise = rng.random((count, size, size))
    smooth = ndimage.gaussian_filter(noise, sigma=(0, size / 24, size / 24))
    return smooth > np.quantile(smooth, 0.67, axis=(1, 2), keepdims=True)


def predictions_like(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W) bool: each truth shifted by up to 3 pixels, grown or shrunk by up to 2, and in a
    third of the images with a stray disc added."""
    size = truth.shape[1]
    yy, xx = np.mgrid[:size, :size]
    out = np.empty_like(truth)
    for i, mask in enumerate(truth):
        mask = ndimage.shift(mask, rng.integers(-3, 4, 2), order=0, mode="constant")
        grow = int(rng.integers(-2, 3))
        if grow > 0:
            mask = ndimage.binary_dilation(mask, iterations=grow)
        elif grow < 0:
            mask = ndimage.binary_erosion(mask, iterations=-grow)
        if rng.random() < 1 / 3:
            cy, cx = rng.integers(0, size, 2)
            mask = mask | ((yy - cy) ** 2 + (xx - cx) ** 2 <= (size / 40) ** 2)
        out[i] = mask
    return out


def _ms_per_image(fn, count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / count


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    folder = args.masks if args.masks is not None else shared_shenzhen()
    real = np.zeros((0, args.size, args.size), dtype=bool)
    if (folder / "labels.csv").is_file():
        real = load_masks(folder, args.size)
        real = real[np.arange(args.images // 2) % len(real)]
    truth = np.concatenate([real, random_masks(args.images - len(real), args.size, rng)])
    pred = predictions_like(truth, rng)
    n = len(truth)

    hausdorff_scores(pred[:2], truth[:2])  # warm-up (first calls load code and build tables)
    ssim_scores(pred[:2], truth[:2])
    out = {"size": args.size, "images": n, "real_masks": len(real), "threads": args.threads,
           "repeats": args.repeats, "load_average_1min": os.getloadavg()[0]}
    pairs = list(zip(pred, truth))
    out["ms_per_image_hausdorff"] = _ms_per_image(lambda: hausdorff_scores(pred, truth), n,
                                                  args.repeats)
    out["ms_per_image_hausdorff_reference"] = _ms_per_image(
        lambda: [reference_average_hausdorff(p, t) for p, t in pairs], n, 1)
    out["ms_per_image_ssim"] = _ms_per_image(lambda: ssim_scores(pred, truth), n, args.repeats)
    out["ms_per_image_ssim_reference"] = _ms_per_image(
        lambda: [reference_mask_ssim(p, t) for p, t in pairs], n, 1)

    scores = {}
    for definition, repeats in (("fast", args.repeats), ("reference", 1)):
        key = "ms_per_image_total" + ("_reference" if definition == "reference" else "")
        out[key] = _ms_per_image(
            lambda: scores.__setitem__(definition, segmentation_scores(pred, truth, definition)),
            n, repeats)
    for name in SEGMENTATION_METRICS:
        out[f"max_abs_difference_{name}"] = float(
            np.max(np.abs(scores["fast"][name] - scores["reference"][name])))
    out["speedup_total"] = out["ms_per_image_total_reference"] / out["ms_per_image_total"]
    return out
