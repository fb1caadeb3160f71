"""The paper's figures: ROC curves, Bland-Altman of lung areas, Dice box plots, mask boundary
overlays and saliency maps per class.

Every figure is written as a PNG (``FIGURE_DPI`` dots per inch, no tight cropping, so a figure of
w x h inches is exactly w*dpi x h*dpi pixels) and, when a SummaryWriter is given, as a TensorBoard
image under the same tag. matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from mmdist.data.imageset import CLASS_NAMES  # noqa: E402
from mmdist.evaluation.metrics import segmentation_scores  # noqa: E402

FIGURE_DPI = 100
TRUTH_COLOUR = (0, 255, 0)
PREDICTION_COLOUR = (255, 0, 0)
OVERLAY_LABELS = {"truth": "reference mask", "prediction": "prediction"}
"""Legend entries of the overlay figure, for the green and the red outline."""


def save_figure(fig, path: str | Path, writer=None, tag: Optional[str] = None, step: int = 0) -> Path:
    """Write ``fig`` to ``path`` (PNG) and, with a writer, to TensorBoard as ``tag``; close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    if writer is not None:
        writer.add_figure(tag or path.stem, fig, global_step=step, close=False)
    plt.close(fig)
    return path


def save_image(rgb: np.ndarray, path: str | Path, writer=None, tag: Optional[str] = None,
               step: int = 0) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG and, with a writer, as a TensorBoard image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    if writer is not None:
        writer.add_image(tag or path.stem, rgb, global_step=step, dataformats="HWC")
    return path


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    """ROC curves, one per test set: name -> (labels (N,) {0,1}, pneumonia scores (N,) float).

    Sets with a single class have no ROC curve and are listed as such in the legend.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, (labels, scores) in curves.items():
        labels = np.asarray(labels)
        if len(np.unique(labels)) < 2:
            ax.plot([], [], label=f"{name} (one class: no ROC)")
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (normal called pneumonia)",
           ylabel="true positive rate (pneumonia found)", title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.93)
    return fig


def bland_altman_figure(pred_area: np.ndarray, true_area: np.ndarray, title: str = "lung area"):
    """Bland-Altman plot: difference (predicted - true) against the mean of the two, in pixels,
    with the mean difference and the 95% limits of agreement (mean +- 1.96 sd)."""
    pred_area = np.asarray(pred_area, dtype=np.float64)
    true_area = np.asarray(true_area, dtype=np.float64)
    mean = (pred_area + true_area) / 2
    diff = pred_area - true_area
    bias = float(diff.mean()) if len(diff) else 0.0
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(mean, diff, s=12, alpha=0.7)
    ax.axhline(bias, color="C1", label=f"bias {bias:.1f}")
    for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
        ax.axhline(limit, color="C1", linestyle="--")
    ax.plot([], [], color="C1", linestyle="--", label=f"±1.96 sd ({1.96 * sd:.1f})")
    ax.set(xlabel="mean of predicted and true area (pixels)",
           ylabel="predicted - true area (pixels)", title=f"Bland-Altman: {title}")
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.13, top=0.91)
    return fig


def dice_boxplot_figure(dice: dict[str, np.ndarray], title: str = "Dice per image"):
    """Box plots of per-image Dice, one box per entry (model or test set)."""
    names = list(dice)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5), 4))
    ax.boxplot([np.asarray(dice[n], dtype=np.float64) for n in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax.set(ylabel="Dice", ylim=(0, 1.02), title=title)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.2, top=0.91)
    return fig


def boundary_overlay(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W) uint8 image with the truth boundary in green and the predicted one in red.

    true, pred: (H, W) binary masks. Returns (H, W, 3) uint8; where both boundaries meet, the
    prediction is drawn on top.
    """
    rgb = np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)
    rgb[_edges(true)] = TRUTH_COLOUR
    rgb[_edges(pred)] = PREDICTION_COLOUR
    return rgb


def _edges(mask: np.ndarray) -> np.ndarray:
    """Inner boundary pixels of a mask; the image border counts as background, so a mask that
    touches it (an untrained model's all-foreground guess) still shows an outline."""
    padded = np.pad(np.asarray(mask).astype(bool), 1)
    return find_boundaries(padded, mode="inner")[1:-1, 1:-1]


def boundary_overlay_grid(images: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """K overlays side by side: (K, H, W) inputs -> (H, K*W, 3) uint8."""
    return np.concatenate([boundary_overlay(i, t, p) for i, t, p in zip(images, true, pred)], axis=1)


def boundary_overlay_figure(images: np.ndarray, true: np.ndarray, pred: np.ndarray,
                            dice: Optional[np.ndarray] = None):
    """K overlays side by side, each titled with its Dice, over a legend naming the outlines.

    images: (K, H, W) uint8, K >= 1; true, pred: (K, H, W) binary masks; dice: (K,) per-image
    Dice (default: computed by mmdist.evaluation.metrics.segmentation_scores, as the per-image
    results are). Each panel shows its image at one figure pixel per image pixel, so one-pixel
    outlines survive; the figure is max(K*W, 260) x (H + 40) pixels.
    """
    images, true, pred = np.asarray(images), np.asarray(true), np.asarray(pred)
    if len(images) == 0:
        raise ValueError("boundary_overlay_figure: no images")
    dice = segmentation_scores(pred, true)["dice"] if dice is None else np.asarray(dice)
    k, h, w = images.shape
    band = 20  # pixels above the panels for their titles, and below for the legend
    width, height = max(k * w, 260), h + 2 * band
    fig = plt.figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI))
    left = (width - k * w) / 2
    for i in range(k):
        ax = fig.add_axes([(left + i * w) / width, band / height, w / width, h / height])
        ax.imshow(boundary_overlay(images[i], true[i], pred[i]), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"Dice {dice[i]:.3f}", fontsize=7, pad=2)
    handles = [plt.Line2D([], [], color=np.asarray(colour) / 255, label=OVERLAY_LABELS[key])
               for key, colour in (("truth", TRUTH_COLOUR), ("prediction", PREDICTION_COLOUR))]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False,
               borderaxespad=0.2, handlelength=1.5)
    return fig


def saliency_figure(images: np.ndarray, saliency: np.ndarray, labels: np.ndarray,
                    probs: np.ndarray, per_class: int = 4):
    """Saliency maps per class: one row per true class, up to ``per_class`` images each.

    images: (N, H, W) uint8; saliency: (N, H, W) float >= 0; labels: (N,) {0, 1};
    probs: (N, 2) predicted class probabilities (shown in each title).
    """
    labels = np.asarray(labels)
    fig, axes = plt.subplots(2, per_class, figsize=(2 * per_class, 4.4), squeeze=False)
    for row, name in enumerate(CLASS_NAMES):
        chosen = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(chosen):
                continue
            i = chosen[col]
            heat = saliency[i] / max(float(saliency[i].max()), 1e-12)
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.set_title(f"{name}: p(pn)={probs[i][1]:.2f}", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.15)
    return fig


def per_image_dice(runs) -> dict[str, dict[str, np.ndarray]]:
    """Per-image Dice of a sweep's runs: {segmentation test set: {'variant c/s': values}}.

    runs: mmdist.evaluation.tables.RunResult list; reads RUN_DIR/eval/per_image/<set>.csv (written
    by ``python -m mmdist.evaluate``); runs without that file are left out. Seeds are pooled.
    """
    import csv

    by_set: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, entry in run.test_sets.items():
            path = Path(run.run_dir) / "eval" / "per_image" / f"{name}.csv"
            if entry.get("kind") != "segmentation" or not path.is_file():
                continue
            with path.open(newline="") as handle:
                dice = [float(row["dice"]) for row in csv.DictReader(handle)]
            label = f"{run.variant} {run.classification_labeled}/{run.segmentation_labeled}"
            by_set.setdefault(name, {}).setdefault(label, []).extend(dice)
    return {name: {label: np.asarray(v) for label, v in cells.items()}
            for name, cells in by_set.items()}


def sweep_dice_boxplots(runs, out_dir: str | Path, writer=None) -> list[Path]:
    """The paper's consistency figure over a sweep: one box per (model, |D_l^c|, |D_l^s|) cell,
    one figure per segmentation test set (see ``per_image_dice``). Writes
    out_dir/dice_boxplot_<set>.png; returns the paths."""
    written = []
    for name, cells in sorted(per_image_dice(runs).items()):
        figure = dice_boxplot_figure(cells, title=f"Dice per image, {name} (model |D_l^c|/|D_l^s|)")
        written.append(save_figure(figure, Path(out_dir) / f"dice_boxplot_{name}.png", writer,
                                   f"sweep/dice_boxplot/{name}"))
    return written
