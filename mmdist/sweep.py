"""``python -m mmdist.sweep``: run a grid of trainings as one SLURM job array, and tabulate it.

    python -m mmdist.sweep configs/sweeps/paper_table2.yaml [key=value ...] [--wait]
    python -m mmdist.sweep --collect runs/sweeps/paper_table2

The first form submits every cell that has not completed (see mmdist.launch.sweep for the spec);
running it again submits only failed or missing cells. ``--collect`` writes SWEEP_DIR/table.md and
SWEEP_DIR/table.csv: mean ± std over seeds per (model, |D_l^c|, |D_l^s|) cell, with t-tests against
MultiMix (mmdist.evaluation.tables). A run evaluated with ``python -m mmdist.evaluate`` contributes
its test-set metrics (eval/metrics.json); otherwise its final validation accuracy and Dice from
summary.json (test sets 'val_classification' and 'val_segmentation').
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mmdist.config import ConfigError

TABLE_KEYS = ("model.variant", "data.budget.classification_labeled",
              "data.budget.segmentation_labeled", "seed")
"""Grid keys the table has columns for; any other grid key is shown beside the model name."""


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


def collect(sweep_dir: str | Path, reference: str = "multimix") -> tuple[Path, Path, dict]:
    """Write the sweep's table; returns (table.md, table.csv, {cell name: 'used'|reason})."""
    from mmdist.config import load_config
    from mmdist.evaluation.tables import RunResult, load_run, rows_to_csv, rows_to_markdown, sweep_rows
    from mmdist.launch.sweep import read_state

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {sweep_dir}")
    state = read_state(sweep_dir)
    run_dirs = sorted(p.parent for p in sweep_dir.glob("*/config.yaml"))
    names = sorted(set(state.get("cells", {})) | {p.name for p in run_dirs})
    runs, report = [], {}
    for name in names:
        run_dir = sweep_dir / name
        values = state.get("cells", {}).get(name, {}).get("values", {})
        extra = {k.rsplit(".", 1)[-1]: v for k, v in values.items() if k not in TABLE_KEYS}
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if summary.get("status") != "completed":
            report[name] = f"not completed ({summary.get('status', 'no summary.json')})"
            continue
        if (run_dir / "eval" / "metrics.json").is_file():
            run = load_run(run_dir)
        else:
            try:
                config = load_config(run_dir / "config.yaml")
            except ConfigError as exc:
                raise ConfigError(f"{run_dir / 'config.yaml'}: {exc}") from None
            budget = config.data.budget
            run = RunResult(run_dir, config.model.variant, str(budget.classification_labeled),
                            str(budget.segmentation_labeled), config.seed,
                            _validation_results(run_dir, summary))
        if extra:
            run.variant += " [" + ", ".join(f"{k}={v}" for k, v in extra.items()) + "]"
        runs.append(run)
        report[name] = "used"
    if not runs:
        raise ValueError(f"{sweep_dir}: no completed runs to tabulate ({len(names)} cells: "
                         + "; ".join(f"{k}: {v}" for k, v in report.items()) + ")")
    rows = sweep_rows(runs, reference)
    md, csv_path = sweep_dir / "table.md", sweep_dir / "table.csv"
    missing = [n for n, v in report.items() if v != "used"]
    note = (f"\n{len(runs)} of {len(names)} runs completed"
            + (f"; not in the table: {', '.join(missing)}" if missing else "") + ".\n")
    md.write_text(rows_to_markdown(rows, reference) + note)
    csv_path.write_text(rows_to_csv(rows))
    return md, csv_path, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("spec", nargs="?", help="sweep spec YAML (configs/sweeps/)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every cell")
    parser.add_argument("--output-dir", default=None, help="sweep directory (default: the spec's)")
    parser.add_argument("--collect", metavar="SWEEP_DIR", help="write the results table and exit")
    parser.add_argument("--reference", default="multimix", help="model the t-tests compare against")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state")
    parser.add_argument("--local", action="store_true", help="run the cells here, without SLURM")
    parser.add_argument("--wait", action="store_true", help="follow the array to its end")
    parser.add_argument("--wait-timeout", type=float, default=None, help="seconds; default: no limit")
    args = parser.parse_intermixed_args(argv)

    if args.collect:
        try:
            md, csv_path, report = collect(args.collect, args.reference)
        except (FileNotFoundError, ValueError) as exc:
            print(f"collect error: {exc}", file=sys.stderr)
            return 2
        print(md.read_text(), end="")
        print(f"written: {md} {csv_path}")
        return 0
    if not args.spec:
        parser.error("give a sweep spec, or --collect SWEEP_DIR")

    from mmdist.launch.submit import follow
    from mmdist.launch.sweep import cell_status, load_spec, read_state, submit_sweep

    try:
        spec = load_spec(args.spec, args.output_dir, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        state = read_state(spec.output_dir)
        for cell in spec.cells:
            print(f"{cell_status(cell, state, spec.evaluate):9s} {cell.run_dir}")
        return 0
    jobs, statuses = submit_sweep(spec, local=args.local)
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    print(f"sweep {spec.name}: {len(spec.cells)} cells {counts}; submitted {len(jobs)}")
    if jobs and args.local:
        print(f"processes:   {' '.join(job.job_id for job in jobs)} (all at once, on this machine)")
    elif jobs:
        print(f"job array:   {jobs[0].job_id.split('_')[0]} "
              f"(at most {spec.slurm.array_parallelism} at once)")
    print(f"sweep dir:   {spec.output_dir}")
    print(f"TensorBoard: tensorboard --logdir {spec.output_dir}")
    sys.stdout.flush()
    if not (args.wait or args.local) or not jobs:
        return 0
    worst = 0
    deadline = None if args.wait_timeout is None else time.monotonic() + args.wait_timeout
    for job in jobs:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        outcome = follow(job, timeout_s=left)
        print(f"{job.job_id}: {outcome.status} {outcome.error}".rstrip())
        worst = max(worst, outcome.exit_code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
