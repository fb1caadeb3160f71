"""``python -m mmdist.sweep``: run a grid of trainings as one SLURM job array, and tabulate it.

    python -m mmdist.sweep configs/sweeps/paper_table2.yaml [key=value ...] [--wait]
    python -m mmdist.sweep configs/sweeps/paper_table2.yaml --dry-run
    python -m mmdist.sweep --collect runs/sweeps/paper_table2

The first form submits every run that has not completed (the spec: mmdist.launch.sweep_spec);
running it again submits only failed or missing runs. Cells that a variant's run stands for
under several budgets (U-Net ignores |D_l^c|, the encoder-only models |D_l^s|) run once.
``--dry-run`` lists the runs, their state and the cells each stands for, with the jobs the spec's
slurm.runs_per_gpu (K) makes and their GPU-hours: from ``estimate.seconds_per_step`` (S, one run
alone) at K = 1, from ``estimate.seconds_per_step_packed`` (S_K) or ``--pack-result FILE`` (a
``python -m mmdist.bench pack`` result) at K > 1 (mmdist.launch.cost). ``--collect`` writes
SWEEP_DIR/table.md and SWEEP_DIR/table.csv over the spec's cells (those recorded in
SWEEP_DIR/sweep.json, or those of a spec given instead of SWEEP_DIR): mean ± std over seeds per (model, |D_l^c|, |D_l^s|) cell, with
t-tests against MultiMix (mmdist.evaluation.tables). A run evaluated with
``python -m mmdist.evaluate`` contributes its test-set metrics (eval/metrics.json); otherwise its
final validation accuracy and Dice from summary.json (test sets 'val_classification' and
'val_segmentation').
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

from mmdist.config import ConfigError
from mmdist.config.errors import InputError, InputNotFoundError
from mmdist.engine.user_errors import report as report_error, user_errors

TABLE_KEYS = ("model.variant", "data.budget.classification_labeled",
              "data.budget.segmentation_labeled", "seed")
"""Grid keys the table has columns for; any other grid key is shown beside the model name."""
BUDGET_FIELDS = {"data.budget.classification_labeled": "classification_labeled",
                 "data.budget.segmentation_labeled": "segmentation_labeled"}
"""Grid keys a cell shows in its table row even where its run trained at another value."""


def _validation_results(run_dir: Path, summary: dict) -> dict:
    """summary.json's final validation metrics in eval/metrics.json's test-set layout."""
    sets = {}
    if "val_acc" in summary:
        sets["val_classification"] = {"kind": "classification", "domain": "in",
                                      "metrics": {"acc": summary["val_acc"]}}
    if "val_dice" in summary:
        sets["val_segmentation"] = {"kind": "segmentation", "domain": "in",
                                    "metrics": {"dice": summary["val_dice"]}}
    return sets


def _run_result(run_dir: Path):
    """A completed run's RunResult, or the reason it has none (a str)."""
    from mmdist.config import load_config
    from mmdist.evaluation.tables import RunResult, load_run

    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except json.JSONDecodeError as exc:  # a run killed while writing it: its cell is left out
        return f"unreadable summary.json ({exc.msg})"
    if summary.get("status") != "completed":
        return f"not completed ({summary.get('status', 'no summary.json')})"
    if (run_dir / "eval" / "metrics.json").is_file():
        return load_run(run_dir)
    try:
        config = load_config(run_dir / "config.yaml")
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'config.yaml'}: {exc}") from None
    budget = config.data.budget
    return RunResult(run_dir, config.model.variant, str(budget.classification_labeled),
                     str(budget.segmentation_labeled), config.seed,
                     _validation_results(run_dir, summary))


def sweep_cells(target: str | Path, output_dir=None, overrides=()) -> tuple[Path, dict]:
    """(sweep dir, {cell name: {'values', 'run'}}) of a sweep folder (its sweep.json) or a spec."""
    from mmdist.launch.sweep_spec import load_spec
    from mmdist.launch.sweep_state import read_state

    target = Path(target)
    if target.is_file():
        spec = load_spec(target, output_dir, overrides)
        return spec.output_dir, spec.cell_records()
    if not target.is_dir():
        raise InputNotFoundError(f"sweep directory not found: {target}")
    cells = read_state(target).get("cells") or {}
    if not cells:
        raise InputError(f"{target}: sweep.json lists no cells; submit the sweep first, or pass "
                         "its spec: --collect SPEC [--output-dir SWEEP_DIR]")
    return target, cells


def collect(target: str | Path, reference: str = "multimix", output_dir=None,
            overrides=()) -> tuple[Path, Path, dict]:
    """Write the sweep's table over its cells (``sweep_cells``); returns (table.md, table.csv,
    {cell name: 'used'|reason}). A run that stands for several cells counts in each of them,
    under that cell's budgets."""
    from mmdist.evaluation.tables import rows_to_csv, rows_to_markdown, sweep_rows

    sweep_dir, cells = sweep_cells(target, output_dir, overrides)
    results, runs, report = {}, [], {}
    for name, cell in cells.items():
        if cell["run"] not in results:
            results[cell["run"]] = _run_result(sweep_dir / cell["run"])
        result = results[cell["run"]]
        if isinstance(result, str):
            report[name] = result
            continue
        values = cell["values"]
        shown = {BUDGET_FIELDS[k]: str(v) for k, v in values.items() if k in BUDGET_FIELDS}
        extra = {k.rsplit(".", 1)[-1]: v for k, v in values.items() if k not in TABLE_KEYS}
        variant = result.variant + (" [" + ", ".join(f"{k}={v}" for k, v in extra.items()) + "]"
                                    if extra else "")
        runs.append(dataclasses.replace(result, variant=variant, **shown))
        report[name] = "used"
    if not runs:
        raise InputError(f"{sweep_dir}: no completed runs to tabulate ({len(cells)} cells: "
                         + "; ".join(f"{k}: {v}" for k, v in report.items()) + ")")
    rows = sweep_rows(runs, reference)
    md, csv_path = sweep_dir / "table.md", sweep_dir / "table.csv"
    missing = [n for n, v in report.items() if v != "used"]
    used_runs = {cells[n]["run"] for n, v in report.items() if v == "used"}
    note = (f"\n{len(runs)} of {len(cells)} cells completed ({len(used_runs)} runs)"
            + (f"; not in the table: {', '.join(missing)}" if missing else "") + ".\n")
    md.write_text(rows_to_markdown(rows, reference) + note)
    csv_path.write_text(rows_to_csv(rows))
    return md, csv_path, report


def dry_run_lines(spec, statuses: dict[str, str], pack_result=None) -> list[str]:
    """What --dry-run prints: counts, the jobs and their estimate (mmdist.launch.cost), then one
    line per run with its state."""
    from mmdist.launch.cost import estimate_lines

    shared = len(spec.cells) - len(spec.runs)
    lines = [f"sweep {spec.name}: {len(spec.cells)} cells -> {len(spec.runs)} runs"
             + (f" ({shared} cells reuse another cell's run: their variant never reads the key "
                "they differ in)" if shared else ""),
             f"states:      {dict(sorted(Counter(statuses.values()).items()))}",
             *estimate_lines(spec, statuses, pack_result)]
    for run in spec.runs:
        also = [c for c in run.cells if c != run.name]
        lines.append(f"{statuses[run.name]:9s} {run.run_dir}"
                     + (f"  (also cells {', '.join(also)})" if also else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("spec", nargs="?", help="sweep spec YAML (configs/sweeps/)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every cell")
    parser.add_argument("--output-dir", default=None, help="sweep directory (default: the spec's)")
    parser.add_argument("--collect", metavar="SWEEP_DIR|SPEC",
                        help="write the results table of the sweep's cells and exit")
    parser.add_argument("--reference", default="multimix", help="model the t-tests compare against")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs, their state, the cells they stand for, an estimate")
    parser.add_argument("--pack-result", metavar="FILE", default=None,
                        help="--dry-run: S_K from this `python -m mmdist.bench pack` JSON at the "
                             "spec's slurm.runs_per_gpu")
    parser.add_argument("--local", action="store_true",
                        help="run here, without SLURM (at most slurm.array_parallelism at once)")
    parser.add_argument("--wait", action="store_true", help="follow the array to its end")
    parser.add_argument("--wait-timeout", type=float, default=None, help="seconds; default: no limit")
    args = parser.parse_intermixed_args(argv)

    if args.collect:
        try:
            md, csv_path, _ = collect(args.collect, args.reference, args.output_dir, args.overrides)
        except user_errors() as exc:  # a bug of mmdist keeps its traceback
            return report_error("collect error", exc)
        print(md.read_text(), end="")
        print(f"written: {md} {csv_path}")
        return 0
    if not args.spec:
        parser.error("give a sweep spec, or --collect SWEEP_DIR")
    if args.pack_result and not args.dry_run:
        parser.error("--pack-result prices a spec: use it with --dry-run")

    from mmdist.launch.submit import follow, slurm_unreachable
    from mmdist.launch.sweep_spec import load_spec
    from mmdist.launch.sweep_state import sweep_statuses
    from mmdist.launch.sweep_submit import submit_sweep

    try:
        spec = load_spec(args.spec, args.output_dir, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        statuses = sweep_statuses(spec)
    except user_errors() as exc:  # e.g. the sweep folder's sweep.json is damaged
        return report_error("sweep error", exc)
    if args.dry_run:
        try:
            print("\n".join(dry_run_lines(spec, statuses, args.pack_result)))
        except ValueError as exc:
            print(f"--pack-result: {exc}", file=sys.stderr)
            return 2
        return 0
    todo = sum(s in ("missing", "failed") for s in statuses.values())
    if todo and not args.local:
        reason = slurm_unreachable()
        if reason:
            print(f"sweep: no SLURM controller reachable ({reason}); to run the sweep on this "
                  f"machine instead: python -m mmdist.sweep {args.spec} --local", file=sys.stderr)
            return 2
    counts = dict(sorted(Counter(statuses.values()).items()))
    k = spec.slurm.runs_per_gpu
    print(f"sweep {spec.name}: {len(spec.cells)} cells, {len(spec.runs)} runs {counts}; "
          f"submitting {todo}" + (f", {k} per GPU" if k > 1 else ""))
    if todo and args.local:
        print(f"here, at most {spec.slurm.array_parallelism} at once")
    sys.stdout.flush()
    submitted = submit_sweep(spec, statuses, local=args.local)
    if submitted and not args.local:
        print(f"job array:   {submitted[0][1].job_id.split('_')[0]} "
              f"(at most {spec.slurm.array_parallelism} at once)")
    print(f"sweep dir:   {spec.output_dir}")
    print(f"TensorBoard: tensorboard --logdir {spec.output_dir}")
    sys.stdout.flush()
    if not (args.wait or args.local) or not submitted:
        return 0
    worst = 0
    deadline = None if args.wait_timeout is None else time.monotonic() + args.wait_timeout
    for names, job in submitted:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        outcome = follow(job, timeout_s=left)
        # A packed job reports each of its runs; a local job's id is a process id, so runs are
        # named by their cell (run folder) only.
        ends = (outcome.summary or {}).get("runs") or {name: outcome.status for name in names}
        where = "" if args.local else f" (job {job.job_id})"
        for name in names:
            print(f"{name}: {ends.get(name, outcome.status)}{where} {outcome.error}".rstrip())
        worst = max(worst, outcome.exit_code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
