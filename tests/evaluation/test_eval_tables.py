"""Sweep tables: mean ± std over seeds and Student's t-test p-values, from run directories."""

import csv
import io
import json
import math

import pytest
from PIL import Image
from scipy.stats import t as student_t

from mmdist.config import dump_config, load_config
from mmdist.evaluation.plots import per_image_dice
from mmdist.evaluation.tables import load_run, paper_row, write_sweep_table


def _run(root, variant, seed, dice, acc=None, cls_budget=100, seg_budget=10):
    run_dir = root / f"{variant}-{seed}"
    (run_dir / "eval").mkdir(parents=True)
    config = load_config(None, [f"model.variant={variant}", f"seed={seed}",
                                f"data.budget.classification_labeled={cls_budget}",
                                f"data.budget.segmentation_labeled={seg_budget}"])
    dump_config(config, run_dir / "config.yaml")
    sets = {"seg_test": {"kind": "segmentation", "domain": "in", "n_images": 5,
                         "metrics": {"dice": dice, "hausdorff": 1.0}}}
    if acc is not None:
        sets["cls_test"] = {"kind": "classification", "domain": "in", "n_images": 5,
                            "metrics": {"acc": acc, "auc": None}}
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"test_sets": sets}))
    (run_dir / "eval" / "per_image").mkdir()
    (run_dir / "eval" / "per_image" / "seg_test.csv").write_text(
        "index,dice\n" + "".join(f"{i},{dice + 0.01 * i}\n" for i in range(5)))
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    return run_dir


def test_mean_std_and_students_t_against_multimix(tmp_path):
    runs = [_run(tmp_path, "multimix", s, d, acc=0.8) for s, d in enumerate([0.90, 0.92, 0.94])]
    runs += [_run(tmp_path, "unet", s, d) for s, d in enumerate([0.80, 0.82, 0.84])]
    md, csv_path = write_sweep_table(runs, tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    unet = next(r for r in rows if r["variant"] == "unet" and r["metric"] == "dice")
    mm = next(r for r in rows if r["variant"] == "multimix" and r["metric"] == "dice")
    assert float(mm["mean"]) == pytest.approx(0.92) and float(mm["std"]) == pytest.approx(0.02)
    assert float(unet["mean"]) == pytest.approx(0.82) and int(unet["n"]) == 3
    assert mm["p_vs_reference"] == ""
    # Student's t with pooled sd 0.02, n = 3 + 3: t = 0.1 / (0.02 * sqrt(2/3)), df = 4
    t_value = 0.1 / (0.02 * math.sqrt(2 / 3))
    assert float(unet["p_vs_reference"]) == pytest.approx(2 * student_t.sf(t_value, 4), rel=1e-9)
    text = md.read_text()
    assert "| multimix | 100 | 10 | 3 |" in text and "0.820 ± 0.020 (p=0.00" in text
    # identical values in both groups: no p-value, not an error
    hd = next(r for r in rows if r["variant"] == "unet" and r["metric"] == "hausdorff")
    assert hd["p_vs_reference"] == ""
    # auc was null in every run: no row at all
    assert not [r for r in rows if r["metric"] == "auc"]
    paper = (tmp_path / "out" / "table_paper.md").read_text().splitlines()
    assert "| multimix | 100 | 10 | 0.800 ± 0.000 | - | - | 0.920 ± 0.020 | 1.000 ± 0.000 | - |" in paper
    assert "| unet | 100 | 10 | - | - | - | 0.820 ± 0.020* | 1.000 ± 0.000 | - |" in paper
    # the consistency figure: one box per model (2 boxes -> a 4 x 4 inch figure at 100 dpi)
    with Image.open(tmp_path / "out" / "dice_boxplot_seg_test.png") as box:
        assert box.size == (400, 400)
    dice = per_image_dice([load_run(r) for r in runs])["seg_test"]
    assert sorted(dice) == ["multimix 100/10", "unet 100/10"]
    assert len(dice["unet 100/10"]) == 15  # 5 images x 3 seeds
    assert dice["unet 100/10"].mean() == pytest.approx(0.82 + 0.02)


def test_paper_row_puts_cross_domain_in_brackets(tmp_path):
    sets = {"jsrt": {"kind": "segmentation", "domain": "in", "metrics": {"dice": 0.95, "ssim": 0.9,
                                                                        "hausdorff": 0.7}},
            "shenzhen": {"kind": "segmentation", "domain": "cross", "metrics": {"dice": 0.85}},
            "chex": {"kind": "classification", "domain": "in",
                     "metrics": {"acc": 0.8, "f1_normal": 0.6, "f1_pneumonia": 0.85}}}
    row = paper_row("multimix", 100, 10, sets)
    assert row == "| multimix | 100 | 10 | 0.800 | 0.600 | 0.850 | 0.950 (0.850) | 0.700 | 0.900 |\n"


def test_missing_metrics_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_run(tmp_path)


def test_no_spread_or_p_value_under_three_seeds(tmp_path):
    """One seed has no spread and two give no trustworthy t-test: the tables print the mean
    alone and no p (the CSV leaves std and p empty)."""
    runs = [_run(tmp_path, "multimix", 0, 0.90, acc=0.8)]
    runs += [_run(tmp_path, "unet", s, d) for s, d in enumerate([0.80, 0.84])]
    md, csv_path = write_sweep_table(runs, tmp_path / "out")
    text = md.read_text()
    assert "±" not in text.split("\n\n")[0] and "(p=" not in text
    assert "| multimix | 100 | 10 | 1 | 0.800 | 0.900 | 1.000 |" in text
    assert "| unet | 100 | 10 | 2 | - | 0.820 | 1.000 |" in text
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    unet = next(r for r in rows if r["variant"] == "unet" and r["metric"] == "dice")
    assert (unet["n"], unet["std"], unet["p_vs_reference"]) == ("2", "", "")
    paper = (tmp_path / "out" / "table_paper.md").read_text()
    assert "| unet | 100 | 10 | - | - | - | 0.820 | 1.000 | - |" in paper and "*" not in \
        paper.split("\n\n")[0]


def test_clinical_table_has_balanced_accuracy_confusion_matrix_and_surface_distances(tmp_path):
    sets = {"kermany": {"kind": "classification", "domain": "in",
                        "metrics": {"acc": 0.74, "balanced_acc": 0.5, "sensitivity": 1.0,
                                    "specificity": 0.0, "tn": 0, "fp": 26, "fn": 0, "tp": 74}},
            "shenzhen": {"kind": "segmentation", "domain": "in",
                         "metrics": {"dice": 0.9, "hd95": 4.25, "assd": 1.5}},
            "montgomery": {"kind": "segmentation", "domain": "cross",
                           "metrics": {"dice": 0.8, "hd95": 9.0, "assd": 3.0}}}
    from mmdist.evaluation.tables import CLINICAL_HEADER, clinical_row

    assert CLINICAL_HEADER.startswith("| model | D_l^c | D_l^s | BAcc | Sens | Spec | TN | FP | FN "
                                      "| TP | HD95 | ASSD |")
    assert clinical_row("unet", 100, 10, sets) == (
        "| unet | 100 | 10 | 0.500 | 1.000 | 0.000 | 0 | 26 | 0 | 74 | 4.250 (9.000) | "
        "1.500 (3.000) |\n")
    run = _run(tmp_path, "multimix", 0, 0.9, acc=0.8)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    metrics["test_sets"]["cls_test"]["metrics"].update(balanced_acc=0.5, tn=0, fp=3, fn=0, tp=2)
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    write_sweep_table([run], tmp_path / "out")
    clinical = (tmp_path / "out" / "table_clinical.md").read_text().splitlines()
    assert clinical[2] == "| multimix | 100 | 10 | 0.500 | - | - | 0.000 | 3.000 | 0.000 | 2.000 | - | - |"
