"""A run's evaluation figures from its per-image results: ROC, box plots of Dice, HD95 and ASSD,
Bland-Altman of lung areas, boundary overlays of each segmentation set's worst, median and best
image (by Dice, each named) and saliency per class (mmdist.evaluation.plots draws them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmdist.data.row_reads import gather_rows
from mmdist.data.step_batch import to_model_input
from mmdist.evaluation import plots
from mmdist.model.saliency import input_saliency

if TYPE_CHECKING:  # the test sets' type only; evaluate imports this module
    from mmdist.evaluation.evaluate import EvalSet


def overlay_picks(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The worst, median and best image of a segmentation set by Dice (fewer when it has fewer):
    (positions into its columns, their ranks' words)."""
    order = np.argsort(columns["dice"], kind="stable")
    if len(order) < 3:
        return order, ["worst", "best"][:len(order)] if len(order) == 2 else ["only"]
    return order[[0, len(order) // 2, -1]], ["worst", "median", "best"]


def _image_names(test_set: EvalSet, indices: np.ndarray) -> list[str]:
    names = test_set.imageset.names
    return [Path(str(names[i])).name if names is not None else f"#{int(i)}" for i in indices]


@torch.no_grad()
def examples_of(model, test_set: EvalSet, columns: dict, count: int, image_size: int,
              device) -> dict:
    """Inputs, masks, predictions, probabilities and saliency of a few images of a set (rank 0):
    a segmentation set's worst, median and best image by Dice, a few of each class otherwise."""
    if test_set.kind == "segmentation":
        positions, ranks = overlay_picks(columns)
        chosen = columns["index"][positions]
    else:
        # A few of each class, for the saliency-per-class figure.
        labels = np.asarray(test_set.imageset.labels)[test_set.indices]
        chosen = np.concatenate([test_set.indices[labels == c][:count] for c in (0, 1)])
        positions, ranks = None, []
    images = to_model_input(gather_rows(test_set.imageset.images, chosen, image_size, False))
    out = {"images": gather_rows(test_set.imageset.images, chosen, image_size, False)[:, 0].numpy(),
           "labels": np.asarray(test_set.imageset.labels)[chosen],
           "titles": [f"{rank}: {name}" for rank, name in
                      zip(ranks, _image_names(test_set, chosen))]}
    x = images.to(device)
    if test_set.kind == "segmentation":
        out["pred"] = (model(seg_images=x).seg_logits.float().cpu() > 0)[:, 0].numpy()
        out["true"] = (gather_rows(test_set.imageset.masks, chosen, image_size, True)[:, 0] > 0).numpy()
        out["dice"] = columns["dice"][positions]
    if model.classifier is not None:
        # The saliency the bridge would see, for every model with a classifier.
        _, logits, saliency = input_saliency(x, model.encode, "detached")
        out["probs"] = torch.softmax(logits.float(), 1).cpu().numpy()
        out["saliency"] = saliency[:, 0].cpu().numpy()
    return out


BOXPLOT_METRICS = (("dice", "Dice"), ("hd95", "HD95 (pixels)"), ("assd", "ASSD (pixels)"))
"""Per-image metrics drawn as box plots: (column, axis label)."""


def write_plots(eval_dir: Path, results: list[tuple[EvalSet, dict]], examples: dict,
                writer=None, step: int = 0) -> list[Path]:
    """All of a run's figures from its per-image results and examples; returns the PNG paths."""
    written = []
    curves = {t.name: (c["label"], c["prob"][:, 1]) for t, c in results if t.kind == "classification"}
    if curves:
        written.append(plots.save_figure(plots.roc_figure(curves), eval_dir / "roc.png", writer,
                                         "eval/roc", step))
    segmentation = [(t, c) for t, c in results if t.kind == "segmentation"]
    for metric, label in BOXPLOT_METRICS if segmentation else ():
        values = {t.name: c[metric] for t, c in segmentation if metric in c}
        if not values:
            continue
        box = plots.metric_boxplot_figure(values, label, f"{label.split(' ')[0]} per image")
        written.append(plots.save_figure(box, eval_dir / f"{metric}_boxplot.png", writer,
                                         f"eval/{metric}_boxplot", step))
    for t, c in segmentation:
        figure = plots.bland_altman_figure(c["pred_area"], c["true_area"], f"lung area, {t.name}")
        written.append(plots.save_figure(figure, eval_dir / f"bland_altman_{t.name}.png", writer,
                                         f"eval/bland_altman/{t.name}", step))
        ex = examples[t.name]
        overlay = plots.boundary_overlay_figure(ex["images"], ex["true"], ex["pred"],
                                                dice=ex.get("dice"), titles=ex.get("titles"))
        written.append(plots.save_figure(overlay, eval_dir / f"overlay_{t.name}.png", writer,
                                         f"eval/overlay/{t.name}", step))
    for t, _ in results:
        ex = examples[t.name]
        if t.kind == "classification" and "saliency" in ex:
            figure = plots.saliency_figure(ex["images"], ex["saliency"], ex["labels"], ex["probs"],
                                           per_class=max(1, min(4, len(ex["labels"]))))
            written.append(plots.save_figure(figure, eval_dir / f"saliency_{t.name}.png", writer,
                                             f"eval/saliency/{t.name}", step))
    return written
