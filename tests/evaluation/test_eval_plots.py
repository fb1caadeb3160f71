"""Plot files decode as images of the expected size, and the TensorBoard copies read back."""

import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from mmdist.evaluation import plots


def test_boundary_overlay_marks_the_inner_edges():
    image = np.full((12, 12), 100, dtype=np.uint8)
    true = np.zeros((12, 12), bool)
    true[2:8, 2:8] = True
    pred = np.zeros((12, 12), bool)
    pred[4:10, 4:10] = True
    rgb = plots.boundary_overlay(image, true, pred)
    assert rgb.shape == (12, 12, 3) and rgb.dtype == np.uint8
    green = (rgb == plots.TRUTH_COLOUR).all(-1)
    red = (rgb == plots.PREDICTION_COLOUR).all(-1)
    # truth ring of the 6x6 square: 20 pixels, of which (7,4..7),(4..7,7) are pred-interior, not edge
    assert green[2, 2:8].all() and green[2:8, 2].all() and not green[3:7, 3:7].any()
    assert red[4, 4:10].all() and red[9, 4:10].all() and red.sum() == 20
    assert (rgb[~green & ~red] == 100).all()
    # a mask that fills the image is outlined along the image border
    full = plots.boundary_overlay(image, true, np.ones((12, 12), bool))
    border = np.ones((12, 12), bool)
    border[1:-1, 1:-1] = False
    assert ((full == plots.PREDICTION_COLOUR).all(-1) == border).all()
    grid = plots.boundary_overlay_grid(np.stack([image] * 3), np.stack([true] * 3), np.stack([pred] * 3))
    assert grid.shape == (12, 36, 3)


def test_figures_write_pngs_of_the_expected_size_and_tensorboard_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 6)
    scores = np.clip(labels * 0.4 + rng.uniform(size=12) * 0.6, 0, 1)
    images = rng.integers(0, 255, size=(6, 32, 32), dtype=np.uint8)
    masks = np.zeros((6, 32, 32), bool)
    masks[:, 8:24, 6:26] = True
    writer = SummaryWriter(str(tmp_path / "tb"))
    written = {
        "roc": plots.save_figure(plots.roc_figure({"in": (labels, scores), "one": (np.ones(3), scores[:3])}),
                                 tmp_path / "roc.png", writer, "eval/roc"),
        "bland_altman": plots.save_figure(
            plots.bland_altman_figure(rng.uniform(200, 300, 6), rng.uniform(200, 300, 6)),
            tmp_path / "ba.png", writer, "eval/bland_altman"),
        "dice_box": plots.save_figure(
            plots.dice_boxplot_figure({"a": rng.uniform(size=5), "b": rng.uniform(size=7)}),
            tmp_path / "box.png", writer, "eval/dice_box"),
        "saliency": plots.save_figure(
            plots.saliency_figure(images, rng.uniform(size=(6, 32, 32)), labels[:6],
                                  np.stack([1 - scores[:6], scores[:6]], 1)),
            tmp_path / "sal.png", writer, "eval/saliency"),
        "overlay": plots.save_image(plots.boundary_overlay_grid(images[:4], masks[:4], masks[:4]),
                                    tmp_path / "overlay.png", writer, "eval/overlay"),
    }
    writer.close()
    expected = {"roc": (500, 500), "bland_altman": (600, 400), "dice_box": (400, 400),
                "saliency": (800, 440), "overlay": (128, 32)}
    for name, path in written.items():
        with Image.open(path) as image:
            image.load()
            assert image.size == expected[name], name
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={IMAGES: 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == sorted(
        ["eval/roc", "eval/bland_altman", "eval/dice_box", "eval/saliency", "eval/overlay"])
    for tag, name in [("eval/roc", "roc"), ("eval/overlay", "overlay"), ("eval/saliency", "saliency")]:
        (event,) = events.Images(tag)
        assert (event.width, event.height) == expected[name]
        decoded = Image.open(io.BytesIO(event.encoded_image_string))
        assert decoded.size == expected[name]
    overlay = np.asarray(Image.open(io.BytesIO(events.Images("eval/overlay")[0].encoded_image_string)))
    assert (overlay[..., :3] == np.asarray(Image.open(written["overlay"]))).all()


def test_overlay_figure_names_both_outlines_and_titles_each_panel_with_its_dice(tmp_path):
    size = 32
    images = np.full((3, size, size), 90, dtype=np.uint8)
    true = np.zeros((3, size, size), bool)
    true[:, 8:20, 8:20] = True  # 144 pixels
    pred = np.zeros((3, size, size), bool)
    pred[0, 8:20, 8:20] = True  # the same square: Dice 1
    pred[1, 14:26, 8:20] = True  # half of it: 2 * 72 / 288 = 0.5
    pred[2, 24:30, 24:30] = True  # disjoint: 0
    figure = plots.boundary_overlay_figure(images, true, pred)

    (legend,) = figure.legends
    entries = {text.get_text(): tuple(line.get_color())
               for text, line in zip(legend.get_texts(), legend.get_lines())}
    assert entries == {"reference mask": tuple(np.array(plots.TRUTH_COLOUR) / 255),
                       "prediction": tuple(np.array(plots.PREDICTION_COLOUR) / 255)}
    assert [ax.get_title() for ax in figure.axes] == ["Dice 1.000", "Dice 0.500", "Dice 0.000"]
    # The titles are the metric the per-image results hold, panel by panel.
    computed = plots.segmentation_scores(pred, true)["dice"]
    assert [ax.get_title() for ax in figure.axes] == [f"Dice {d:.3f}" for d in computed]
    zoom = plots.OVERLAY_PANEL_PX // size  # 32 px images are shown 5x (nearest)
    for i, ax in enumerate(figure.axes):
        (shown,) = ax.images
        drawn = np.kron(plots.boundary_overlay(images[i], true[i], pred[i]),
                        np.ones((zoom, zoom, 1), dtype=np.uint8))
        assert (np.asarray(shown.get_array()) == drawn).all()
    # Dice given by the caller is what the titles show.
    given = plots.boundary_overlay_figure(images[:1], true[:1], pred[:1], dice=np.array([0.25]))
    assert given.axes[0].get_title() == "Dice 0.250"
    path = plots.save_figure(figure, tmp_path / "overlay.png")
    width = 3 * size * zoom
    with Image.open(path) as png:
        assert png.size == (max(width, 260), size * zoom + 40)
        pixels = np.asarray(png.convert("RGB"))
    # the three panels sit side by side, each exactly as boundary_overlay draws it, zoomed
    for i in range(3):
        panel = pixels[20:20 + size * zoom, i * size * zoom:(i + 1) * size * zoom]
        assert (panel[::zoom, ::zoom] == plots.boundary_overlay(images[i], true[i], pred[i])).all()
    with pytest.raises(ValueError, match="no images"):
        plots.boundary_overlay_figure(images[:0], true[:0], pred[:0])


def test_roc_bland_altman_box_and_saliency_figures_show_their_data():
    """Each figure draws the numbers it is for, checked against hand computations: the ROC
    curve's area is the Mann-Whitney AUC, the Bland-Altman points and lines are the differences,
    their mean and the limits of agreement, each box spans its quartiles around its median, and
    each saliency panel shows its own normalised map under its true class with its probability."""
    rng = np.random.default_rng(3)
    labels = np.array([0, 1] * 8)
    scores = np.clip(labels * 0.3 + rng.uniform(size=16) * 0.7, 0, 1)

    roc = plots.roc_figure({"in": (labels, scores), "one": (np.ones(4), scores[:4])})
    ax = roc.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    positive, negative = scores[labels == 1], scores[labels == 0]
    auc = np.mean([(p > n) + 0.5 * (p == n) for p in positive for n in negative])
    (name,) = [k for k in lines if k.startswith("in ")]
    assert name == f"in (AUC {auc:.3f})"
    fpr, tpr = lines[name].get_xdata(), lines[name].get_ydata()
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and (np.diff(fpr) >= 0).all()
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)
    assert len(lines["one (one class: no ROC)"].get_xdata()) == 0

    pred, true = rng.uniform(200, 300, 9), rng.uniform(200, 300, 9)
    ba = plots.bland_altman_figure(pred, true).axes[0]
    (points,) = ba.collections
    assert np.allclose(points.get_offsets(), np.stack([(pred + true) / 2, pred - true], 1))
    bias, sd = (pred - true).mean(), (pred - true).std(ddof=1)
    levels = sorted(line.get_ydata()[0] for line in ba.get_lines() if len(line.get_ydata()))
    assert levels == pytest.approx([bias - 1.96 * sd, bias, bias + 1.96 * sd])
    assert f"bias {bias:.1f}" in [t.get_text() for t in ba.get_legend().get_texts()]

    dice = {"a": rng.uniform(size=5), "b": rng.uniform(size=8)}
    box = plots.dice_boxplot_figure(dice).axes[0]
    assert [t.get_text() for t in box.get_xticklabels()] == ["a\n(n=5)", "b\n(n=8)"]
    for i, values in enumerate(dice.values()):
        # Box i is centred at x = i + 1: its outline spans the quartiles, and the line across
        # it (as wide as the box; the caps are narrower) sits at the median.
        centred = [line for line in box.get_lines() if len(line.get_xdata()) and np.isclose(
            (min(line.get_xdata()) + max(line.get_xdata())) / 2, i + 1)]
        width = max(np.ptp(line.get_xdata()) for line in centred)
        across = [line for line in centred if np.isclose(np.ptp(line.get_xdata()), width)]
        spans = sorted(((min(line.get_ydata()), max(line.get_ydata())) for line in across),
                       key=lambda span: span[1] - span[0])
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        assert spans == [pytest.approx((median, median)), pytest.approx((q1, q3))], (i, spans)

    images = rng.integers(0, 255, size=(6, 16, 16), dtype=np.uint8)
    saliency = rng.uniform(size=(6, 16, 16)) * np.arange(1, 7)[:, None, None]
    classes = np.array([1, 0, 1, 1, 0, 1])
    probs = np.stack([1 - scores[:6], scores[:6]], 1)
    figure = plots.saliency_figure(images, saliency, classes, probs, per_class=3)
    axes = np.array(figure.axes).reshape(2, 3)
    for row, indices in enumerate(([1, 4], [0, 2, 3])):
        for col in range(3):
            ax = axes[row, col]
            if col >= len(indices):
                assert not ax.images and ax.get_title() == ""
                continue
            i = indices[col]
            gray, heat = ax.images
            assert (np.asarray(gray.get_array()) == images[i]).all()
            assert np.allclose(np.asarray(heat.get_array()), saliency[i] / saliency[i].max())
            assert ax.get_title() == f"{('normal', 'pneumonia')[row]}: p(pn)={probs[i][1]:.2f}"


def _inside(artist, box, renderer) -> bool:
    extent = artist.get_window_extent(renderer)
    return (extent.x0 >= box.x0 - 0.5 and extent.x1 <= box.x1 + 0.5
            and extent.y0 >= box.y0 - 0.5 and extent.y1 <= box.y1 + 0.5)


def test_overlay_titles_name_each_image_and_fit_their_panel():
    """Small images are zoomed so that 'worst: <name>' and the Dice fit above each panel; a long
    name is cut, never drawn over its neighbour or off the figure."""
    size = 64
    images = np.full((3, size, size), 90, dtype=np.uint8)
    masks = np.zeros((3, size, size), bool)
    masks[:, 10:50, 10:30] = True
    titles = ["worst: CHNCXR_0042_1.png", "median: CHNCXR_0101_0.png",
              "best: a_very_long_image_name_from_some_archive_0001.png"]
    figure = plots.boundary_overlay_figure(images, masks, masks, titles=titles)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert [ax.get_title().split("\n")[0] for ax in figure.axes][:2] == titles[:2]
    assert figure.axes[2].get_title().startswith("best: a_very_long_image_name")
    for ax in figure.axes:
        panel = ax.get_window_extent(renderer)
        extent = ax.title.get_window_extent(renderer)
        assert panel.x0 - 0.5 <= extent.x0 and extent.x1 <= panel.x1 + 0.5, ax.get_title()
        assert _inside(ax.title, figure.bbox, renderer), ax.get_title()


def test_box_plot_title_of_a_sweep_is_not_clipped():
    """The sweep's box-plot title (set name and the cell legend) is wrapped to its figure."""
    title = "Dice per image, shenzhen-lungseg-cross-domain (model |D_l^c|/|D_l^s|)"
    figure = plots.metric_boxplot_figure({"multimix 100/10": np.array([0.8, 0.9, 0.7])}, "Dice",
                                         title)
    figure.canvas.draw()
    ax = figure.axes[0]
    assert ax.get_title().replace("\n", " ") == title
    assert _inside(ax.title, figure.bbox, figure.canvas.get_renderer())


def test_box_plot_leaves_out_the_nan_of_empty_masks_and_counts_what_it_kept():
    figure = plots.metric_boxplot_figure({"a": np.array([1.0, np.nan, 3.0, np.inf])},
                                         "HD95 (pixels)", "HD95 per image")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a\n(n=2)"]
    # matplotlib's boxplot draws whiskers, caps, box, median: the median of the kept 1 and 3
    medians = [line.get_ydata()[0] for line in ax.lines if line.get_color() == "C1"]
    assert medians == [2.0]


def test_overlays_pick_the_worst_median_and_best_image_by_dice():
    from mmdist.evaluation.figures import overlay_picks

    dice = np.array([0.9, 0.2, 0.95, 0.5, 0.7])
    positions, ranks = overlay_picks({"dice": dice})
    assert positions.tolist() == [1, 4, 2] and ranks == ["worst", "median", "best"]
    assert overlay_picks({"dice": np.array([0.3, 0.1])})[0].tolist() == [1, 0]
    assert overlay_picks({"dice": np.array([0.3])})[1] == ["only"]


def test_saliency_overlay_puts_the_map_over_the_xray_with_a_colour_bar(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    saliency = rng.uniform(0, 0.3, (64, 64))
    own = plots.saliency_overlay_figure(image, saliency, title="x.png")
    xray, bar = own.axes
    base, heat = xray.images
    assert (np.asarray(base.get_array()) == image).all() and base.get_cmap().name == "gray"
    assert heat.get_clim() == (0.0, pytest.approx(saliency.max()))
    assert bar.get_ylim() == pytest.approx((0.0, saliency.max()))
    # one scale for several images: the caller's top, not this map's
    shared = plots.saliency_overlay_figure(image, saliency, vmax=2.0)
    assert shared.axes[0].images[1].get_clim() == (0.0, 2.0)
    with Image.open(plots.save_figure(shared, tmp_path / "s.png")) as png:
        assert png.size == (3 * 64 + 70, 3 * 64 + 8)  # zoomed 3x to 192 px, the bar beside
    with pytest.raises(ValueError, match="both be"):
        plots.saliency_overlay_figure(image, saliency[:10])
