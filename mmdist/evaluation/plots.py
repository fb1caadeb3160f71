"""The paper's figures: ROC curves, Bland-Altman of lung areas, box plots of per-image Dice (and
HD95 / ASSD), mask boundary overlays and saliency maps per class.

Every figure is written as a PNG (``FIGURE_DPI`` dots per inch, no tight cropping, so a figure of
w x h inches is exactly w*dpi x h*dpi pixels) and, when a SummaryWriter is given, as a TensorBoard
image under the same tag. matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import math
import textwrap
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


def fit_title(fig, ax, title: str) -> int:
    """Set ``title`` on ``ax``, wrapped at word breaks until its measured extent fits the
    figure's width (the axes are off-centre, so a guess from the character count clips);
    returns its line count."""
    renderer = fig.canvas.get_renderer()
    for width in range(len(title), 9, -2):
        text = "\n".join(textwrap.wrap(title, width, break_on_hyphens=False)) or title
        ax.set_title(text)
        extent = ax.title.get_window_extent(renderer)
        if extent.x0 >= 0 and extent.x1 <= fig.bbox.x1:
            break
    return ax.get_title().count("\n") + 1


def metric_boxplot_figure(values: dict[str, np.ndarray], ylabel: str, title: str):
    """Box plots of a per-image metric, one box per entry (model or test set); non-finite values
    (HD95 / ASSD of empty masks) are left out, and the count kept is shown under each name.
    Dice-like metrics (ylabel starting 'Dice') get the axis 0..1."""
    names = list(values)
    kept = [np.asarray(values[n], dtype=np.float64) for n in names]
    kept = [v[np.isfinite(v)] for v in kept]
    width = max(4.0, 1.2 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 4))
    ax.boxplot(kept)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(v)})" for n, v in zip(names, kept)],
                  rotation=20, fontsize=8)
    ax.set(ylabel=ylabel)
    if ylabel.startswith("Dice"):
        ax.set_ylim(0, 1.02)
    lines = fit_title(fig, ax, title)
    # 12 pt lines of about 17 px and the title's pad, in a 400 px high figure.
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.22, top=1 - (0.04 + 0.05 * lines))
    return fig


def dice_boxplot_figure(dice: dict[str, np.ndarray], title: str = "Dice per image"):
    """Box plots of per-image Dice, one box per entry (model or test set)."""
    return metric_boxplot_figure(dice, "Dice", title)


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


OVERLAY_PANEL_PX = 160
"""Narrowest overlay panel: smaller images are shown at an integer zoom (nearest), so a title of
OVERLAY_TITLE_CHARS characters fits above each and one-pixel outlines stay one zoomed pixel."""
OVERLAY_TITLE_CHARS = 30
OVERLAY_BAND_PX = 20


def boundary_overlay_figure(images: np.ndarray, true: np.ndarray, pred: np.ndarray,
                            dice: Optional[np.ndarray] = None,
                            titles: Optional[list[str]] = None):
    """K overlays side by side, each titled with its Dice (and ``titles[i]`` above it, e.g.
    'worst: CHNCXR_0042_1.png', cut to OVERLAY_TITLE_CHARS), over a legend naming the outlines.

    images: (K, H, W) uint8, K >= 1; true, pred: (K, H, W) binary masks; dice: (K,) per-image
    Dice (default: computed by mmdist.evaluation.metrics.segmentation_scores, as the per-image
    results are). Each panel shows its image at z = ceil(OVERLAY_PANEL_PX / W) figure pixels per
    image pixel (nearest), so one-pixel outlines survive; the figure is max(K*z*W, 260) x
    (z*H + 40 + 10 per title line) pixels.
    """
    images, true, pred = np.asarray(images), np.asarray(true), np.asarray(pred)
    if len(images) == 0:
        raise ValueError("boundary_overlay_figure: no images")
    dice = segmentation_scores(pred, true)["dice"] if dice is None else np.asarray(dice)
    k, h, w = images.shape
    zoom = max(1, math.ceil(OVERLAY_PANEL_PX / w))
    h, w = h * zoom, w * zoom
    top = OVERLAY_BAND_PX + (10 if titles else 0)  # a second title line names the image
    bottom = OVERLAY_BAND_PX  # the legend
    width, height = max(k * w, 260), h + top + bottom
    fig = plt.figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI))
    left = (width - k * w) / 2
    for i in range(k):
        ax = fig.add_axes([(left + i * w) / width, bottom / height, w / width, h / height])
        rgb = boundary_overlay(images[i], true[i], pred[i])
        ax.imshow(np.kron(rgb, np.ones((zoom, zoom, 1), dtype=np.uint8)), interpolation="nearest")
        ax.set_axis_off()
        title = f"Dice {dice[i]:.3f}"
        if titles:
            name = titles[i]
            if len(name) > OVERLAY_TITLE_CHARS:
                name = name[:OVERLAY_TITLE_CHARS - 1] + "…"
            title = f"{name}\n{title}"
        ax.set_title(title, fontsize=7, pad=2, linespacing=1.1)
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


SALIENCY_CMAP = "inferno"
SALIENCY_ALPHA = 0.6


def saliency_overlay_figure(image: np.ndarray, saliency: np.ndarray,
                            vmax: Optional[float] = None, title: Optional[str] = None):
    """One X-ray with its saliency map over it and a colour bar of the map's values.

    image: (H, W) uint8; saliency: (H, W) float >= 0; vmax: the top of the colour scale (pass one
    value for several images to put them on one scale; default: this map's maximum). The image
    is shown at one figure pixel per image pixel (at least 160 px: integer zoom), the bar beside
    it; returns the figure.
    """
    image, saliency = np.asarray(image), np.asarray(saliency, dtype=np.float64)
    if image.shape != saliency.shape or image.ndim != 2:
        raise ValueError(f"image and saliency must both be (H, W), got {image.shape} and "
                         f"{saliency.shape}")
    top = float(saliency.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0  # an all-zero map still gets a scale
    zoom = max(1, math.ceil(OVERLAY_PANEL_PX / image.shape[1]))
    h, w = image.shape[0] * zoom, image.shape[1] * zoom
    band, bar = (OVERLAY_BAND_PX if title else 4), 70  # title above; bar and its labels beside
    width, height = w + bar, h + band + 4
    fig = plt.figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI))
    ax = fig.add_axes([0, 4 / height, w / width, h / height])
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    shown = ax.imshow(saliency, cmap=SALIENCY_CMAP, alpha=SALIENCY_ALPHA, vmin=0, vmax=top,
                      interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=7, pad=2)
    cax = fig.add_axes([(w + 8) / width, 4 / height, 12 / width, h / height])
    colorbar = fig.colorbar(shown, cax=cax)
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("saliency", fontsize=7)
    return fig


def per_image_metric(runs, metric: str = "dice") -> dict[str, dict[str, np.ndarray]]:
    """Per-image values of a metric over a sweep's runs: {segmentation test set: {'variant c/s':
    values}}.

    runs: mmdist.evaluation.tables.RunResult list; reads RUN_DIR/eval/per_image/<set>.csv (written
    by ``python -m mmdist.evaluate``); runs without that file or column are left out. Seeds are
    pooled.
    """
    import csv

    by_set: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for name, entry in run.test_sets.items():
            path = Path(run.run_dir) / "eval" / "per_image" / f"{name}.csv"
            if entry.get("kind") != "segmentation" or not path.is_file():
                continue
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if not rows or metric not in rows[0]:
                continue
            label = f"{run.variant} {run.classification_labeled}/{run.segmentation_labeled}"
            by_set.setdefault(name, {}).setdefault(label, []).extend(
                float(row[metric]) for row in rows)
    return {name: {label: np.asarray(v) for label, v in cells.items()}
            for name, cells in by_set.items()}


def per_image_dice(runs) -> dict[str, dict[str, np.ndarray]]:
    """``per_image_metric(runs, 'dice')``."""
    return per_image_metric(runs, "dice")


SWEEP_BOXPLOTS = (("dice", "Dice"), ("hd95", "HD95 (pixels)"), ("assd", "ASSD (pixels)"))


def sweep_dice_boxplots(runs, out_dir: str | Path, writer=None) -> list[Path]:
    """The paper's consistency figure over a sweep: one box per (model, |D_l^c|, |D_l^s|) cell,
    one figure per segmentation test set and metric (Dice, and HD95 and ASSD where the per-image
    files have them; see ``per_image_metric``). Writes out_dir/<metric>_boxplot_<set>.png;
    returns the paths."""
    written = []
    for metric, label in SWEEP_BOXPLOTS:
        for name, cells in sorted(per_image_metric(runs, metric).items()):
            short = label.split(" ")[0]
            figure = metric_boxplot_figure(
                cells, label, f"{short} per image, {name} (model |D_l^c|/|D_l^s|)")
            written.append(save_figure(figure, Path(out_dir) / f"{metric}_boxplot_{name}.png",
                                       writer, f"sweep/{metric}_boxplot/{name}"))
    return written
