"""Result tables: one run's row in the paper's format, and sweep tables over seeds with t-tests.

A run directory holds config.yaml (which model, which label budgets, which seed) and
eval/metrics.json (written by ``python -m mmdist.evaluate``). A sweep table groups runs into cells
(variant, |D_l^c|, |D_l^s|), reports mean +- std over the runs (seeds) of a cell for every test
set and metric, and Student's two-sided t-test p-value (``scipy.stats.ttest_ind``, equal
variances) of the reference model (MultiMix) against each other model at the same budgets. A
spread and a test need seeds: with fewer than MIN_SEEDS runs in a cell the tables print the mean
alone and no p-value (the CSV leaves std and p empty).

    python -m mmdist.evaluation.tables RUN_DIR... [--out DIR] [--reference multimix]

writes DIR/table.md (every test set and metric), DIR/table.csv, DIR/table_paper.md (the paper's
Table 2 columns), DIR/table_clinical.md (balanced accuracy, sensitivity, specificity, the
confusion matrix, HD95 and ASSD) and DIR/<metric>_boxplot_<set>.png for Dice (the paper's
consistency figure), HD95 and ASSD (default DIR: the current folder).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import ttest_ind

from mmdist.config import ConfigError, load_config
from mmdist.config.errors import InputError, InputNotFoundError
from mmdist.engine.user_errors import report, user_errors
from mmdist.evaluation.metrics import CLASSIFICATION_METRICS, SEGMENTATION_METRICS
from mmdist.evaluation.surface import SURFACE_METRICS

METRIC_ORDER = CLASSIFICATION_METRICS + SEGMENTATION_METRICS + SURFACE_METRICS
MIN_SEEDS = 3
"""Runs a cell needs before the tables print a spread (± std) or a t-test p-value."""
PAPER_COLUMNS = (("Acc", "acc", "classification"), ("F1-N", "f1_normal", "classification"),
                 ("F1-P", "f1_pneumonia", "classification"), ("Dice", "dice", "segmentation"),
                 ("HD", "hausdorff", "segmentation"), ("SSIM", "ssim", "segmentation"))
"""The columns of the paper's Table 2: (header, metric, test-set kind)."""
CLINICAL_COLUMNS = (("BAcc", "balanced_acc", "classification"),
                    ("Sens", "sensitivity", "classification"),
                    ("Spec", "specificity", "classification"), ("TN", "tn", "classification"),
                    ("FP", "fp", "classification"), ("FN", "fn", "classification"),
                    ("TP", "tp", "classification"), ("HD95", "hd95", "segmentation"),
                    ("ASSD", "assd", "segmentation"))
"""What a clinician reads beside Table 2: balanced accuracy, sensitivity (pneumonia found),
specificity, the confusion matrix (pneumonia positive) and the surface distances in pixels."""


def _header(columns) -> str:
    return ("| model | D_l^c | D_l^s | " + " | ".join(h for h, _, _ in columns) + " |\n"
            "|---|---|---|" + "---|" * len(columns) + "\n")


PAPER_HEADER = _header(PAPER_COLUMNS)
CLINICAL_HEADER = _header(CLINICAL_COLUMNS)


@dataclass
class RunResult:
    run_dir: Path
    variant: str
    classification_labeled: str
    segmentation_labeled: str
    seed: int
    test_sets: dict
    """name -> {'kind': 'classification'|'segmentation', 'domain': 'in'|'cross', 'metrics': {...}}"""

    @property
    def cell(self) -> tuple[str, str, str]:
        return self.variant, self.classification_labeled, self.segmentation_labeled


def load_run(run_dir: str | Path) -> RunResult:
    """Read a run's config.yaml and eval/metrics.json; errors name the file."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "eval" / "metrics.json"
    if not metrics_path.is_file():
        raise InputNotFoundError(f"{metrics_path}: missing; run `python -m mmdist.evaluate "
                                 f"{run_dir}` first")
    try:
        config = load_config(run_dir / "config.yaml")
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'config.yaml'}: {exc}") from None
    try:
        data = json.loads(metrics_path.read_text())
        test_sets = data["test_sets"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{metrics_path}: not an evaluation result ({exc!r})") from None
    budget = config.data.budget
    return RunResult(run_dir, config.model.variant, str(budget.classification_labeled),
                     str(budget.segmentation_labeled), config.seed, test_sets)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _first_set(test_sets: dict, kind: str, domain: str):
    for name in sorted(test_sets):
        entry = test_sets[name]
        if entry["kind"] == kind and entry["domain"] == domain:
            return entry
    return None


def paper_row(variant: str, classification_labeled, segmentation_labeled, test_sets: dict,
              columns=PAPER_COLUMNS) -> str:
    """One Markdown row of the paper's Table 2 (or of ``columns``): in-domain values,
    cross-domain in brackets.

    test_sets: as in eval/metrics.json. A metric the run has no test set for prints '-'.
    """
    cells = []
    for _, metric, kind in columns:
        inside = _first_set(test_sets, kind, "in")
        cross = _first_set(test_sets, kind, "cross")
        text = _fmt(inside["metrics"].get(metric)) if inside else "-"
        if cross is not None and metric in cross["metrics"]:
            text += f" ({_fmt(cross['metrics'][metric])})"
        cells.append(text)
    return f"| {variant} | {classification_labeled} | {segmentation_labeled} | " + \
        " | ".join(cells) + " |\n"


def clinical_row(variant: str, classification_labeled, segmentation_labeled,
                 test_sets: dict) -> str:
    """One Markdown row of the clinical table (CLINICAL_COLUMNS), as ``paper_row``."""
    return paper_row(variant, classification_labeled, segmentation_labeled, test_sets,
                     CLINICAL_COLUMNS)


def _t_test(a: list[float], b: list[float]) -> float:
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return math.nan
    with warnings.catch_warnings():
        # Identical values in both groups give NaN with a precision warning: no evidence either way.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=True).pvalue)


def _budget_key(value: str):
    return (1, 0) if value == "full" else (0, int(value))


def sweep_rows(runs: list[RunResult], reference: str = "multimix") -> list[dict]:
    """Long-format rows: one per (cell, test set, metric) with n, mean, std, p vs ``reference``."""
    values = defaultdict(list)
    for run in runs:
        for name, entry in run.test_sets.items():
            for metric, value in entry["metrics"].items():
                if value is not None and not math.isnan(value):
                    values[run.cell + (name, metric)].append(float(value))
    rows = []
    for key in sorted(values, key=lambda k: (_budget_key(k[1]), _budget_key(k[2]), k[0] != reference,
                                             k[0], k[3], METRIC_ORDER.index(k[4])
                                             if k[4] in METRIC_ORDER else 99)):
        variant, cls_budget, seg_budget, test_set, metric = key
        got = values[key]
        ref = values.get((reference, cls_budget, seg_budget, test_set, metric), [])
        rows.append({
            "variant": variant, "classification_labeled": cls_budget,
            "segmentation_labeled": seg_budget, "test_set": test_set, "metric": metric,
            "n": len(got), "mean": float(np.mean(got)),
            # Sample std (ddof=1), as a paper's "+-" over repeated runs; none under MIN_SEEDS.
            "std": float(np.std(got, ddof=1)) if len(got) >= MIN_SEEDS else math.nan,
            "p_vs_reference": math.nan if variant == reference else _t_test(got, ref),
        })
    return rows


def rows_to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    fields = ["variant", "classification_labeled", "segmentation_labeled", "test_set", "metric",
              "n", "mean", "std", "p_vs_reference"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    return out.getvalue()


def rows_to_markdown(rows: list[dict], reference: str = "multimix") -> str:
    """One line per cell; a column per (test set, metric): 'mean ± std' and p vs the reference."""
    columns = []
    for row in rows:
        column = (row["test_set"], row["metric"])
        if column not in columns:
            columns.append(column)
    columns.sort(key=lambda c: (c[0], METRIC_ORDER.index(c[1]) if c[1] in METRIC_ORDER else 99))
    cells: dict = {}
    for row in rows:
        cell = (row["variant"], row["classification_labeled"], row["segmentation_labeled"])
        text = _mean_std(row)
        if not math.isnan(row["p_vs_reference"]):
            text += f" (p={row['p_vs_reference']:.3g})"
        entry = cells.setdefault(cell, {"n": 0})
        entry[(row["test_set"], row["metric"])] = text
        # Runs in the cell: a test set some runs lack has a smaller n than the cell.
        entry["n"] = max(entry["n"], row["n"])
    header = "| model | D_l^c | D_l^s | runs | " + " | ".join(f"{t} {m}" for t, m in columns) + " |\n"
    header += "|---|---|---|---|" + "---|" * len(columns) + "\n"
    lines = [f"| {v} | {c} | {s} | {entry['n']} | " +
             " | ".join(entry.get(col, "-") for col in columns) + " |\n"
             for (v, c, s), entry in cells.items()]
    note = (f"\nmean ± std over runs (seeds); p: Student's two-sided t-test against {reference} "
            f"at the same label budgets; a cell with fewer than {MIN_SEEDS} runs shows its mean "
            "alone and no p.\n")
    return header + "".join(lines) + note


def _mean_std(row: dict) -> str:
    """'mean ± std', or the mean alone for fewer than MIN_SEEDS runs."""
    if math.isnan(row["std"]):
        return f"{row['mean']:.3f}"
    return f"{row['mean']:.3f} ± {row['std']:.3f}"


def paper_table(runs: list[RunResult], reference: str = "multimix",
                columns=PAPER_COLUMNS) -> str:
    """The paper's Table 2 (or ``columns``) over a sweep: one row per cell, each column
    'mean ± std' of the first in-domain test set of its kind, the cross-domain mean in brackets,
    and '*' where the in-domain value differs from the reference model's at the same budgets
    (t-test p < 0.05; cells of MIN_SEEDS runs or more)."""
    rows = sweep_rows(runs, reference)
    kinds: dict[str, tuple[str, str]] = {}
    for run in runs:
        for name, entry in run.test_sets.items():
            kinds.setdefault(name, (entry["kind"], entry["domain"]))
    found = {(r["variant"], r["classification_labeled"], r["segmentation_labeled"],
              r["test_set"], r["metric"]): r for r in rows}
    cells = list(dict.fromkeys((r["variant"], r["classification_labeled"], r["segmentation_labeled"])
                               for r in rows))

    def first(kind: str, domain: str, cell, metric: str):
        for name in sorted(kinds):
            if kinds[name] == (kind, domain) and cell + (name, metric) in found:
                return found[cell + (name, metric)]
        return None

    lines = [_header(columns)]
    for cell in cells:
        texts = []
        for _, metric, kind in columns:
            inside, cross = first(kind, "in", cell, metric), first(kind, "cross", cell, metric)
            text = _mean_std(inside) if inside else "-"
            if inside and inside["p_vs_reference"] < 0.05:
                text += "*"
            if cross:
                text += f" ({cross['mean']:.3f})"
            texts.append(text)
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | " + " | ".join(texts) + " |\n")
    lines.append(f"\nmean ± std over seeds (the mean alone under {MIN_SEEDS} seeds); "
                 f"cross-domain mean in brackets; * p < 0.05 against {reference} (Student's "
                 f"t-test, {MIN_SEEDS} seeds or more).\n")
    return "".join(lines)


def write_sweep_table(run_dirs: list[str | Path], out_dir: str | Path,
                      reference: str = "multimix") -> tuple[Path, Path]:
    """Write out_dir/table.md, out_dir/table.csv, out_dir/table_paper.md,
    out_dir/table_clinical.md and the box plots (out_dir/<metric>_boxplot_<set>.png) for the
    given run directories."""
    from mmdist.evaluation.plots import sweep_dice_boxplots

    if not run_dirs:
        raise ValueError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    rows = sweep_rows(runs, reference)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "table.md", out_dir / "table.csv"
    md.write_text(rows_to_markdown(rows, reference))
    csv_path.write_text(rows_to_csv(rows))
    (out_dir / "table_paper.md").write_text(paper_table(runs, reference))
    (out_dir / "table_clinical.md").write_text(paper_table(runs, reference, CLINICAL_COLUMNS))
    sweep_dice_boxplots(runs, out_dir)
    return md, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.evaluation.tables",
                                     description="Sweep table (mean ± std, t-tests) over runs.")
    parser.add_argument("run_dirs", nargs="+", help="evaluated run directories")
    parser.add_argument("--out", default=".", help="folder for table.md and table.csv")
    parser.add_argument("--reference", default="multimix", help="model the t-tests compare against")
    args = parser.parse_args(argv)
    try:
        md, _ = write_sweep_table(args.run_dirs, args.out, args.reference)
    except user_errors() as exc:  # a bug of mmdist keeps its traceback
        return report("tables", exc)
    print(md.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
