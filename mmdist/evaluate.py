"""Entry point: ``python -m mmdist.evaluate RUN_DIR [--checkpoint FILE] [--weights auto|ema|raw]
[--out DIR] [--no-plots] [key=value ...]``.

Evaluates a trained run on its in-domain test splits and the cross-domain sets named in the
config's ``evaluation`` section (overrides patch the run's config.yaml, e.g.
``'evaluation.cross_domain=[{name: shenzhen, kind: shenzhen, path: /data/shenzhen}]'``), and writes
RUN_DIR/eval/ or --out DIR (see mmdist.evaluation.evaluate); a re-run into the same folder
first deletes what the previous evaluation wrote there. A test set that shares images or patients
with the run's training data is named in a warning line on stderr (and in metrics.json). The checkpoint is the run's best.pt when it kept
one (trainer.select_by), else its latest; the weights its EMA's when it has them. Started as several ranks (torchrun, mpirun or srun:
mmdist.engine.distributed finds them), every rank takes a slice of each test set and rank 0 writes
the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta

import torch.distributed as dist

from mmdist.engine.user_errors import report, user_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="run directory (config.yaml, checkpoints/)")
    parser.add_argument("--checkpoint",
                        help="checkpoint file (default: the run's best.pt, else its latest)")
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                        help="the checkpoint's EMA or raw weights (auto: EMA when it has them)")
    parser.add_argument("--out", help="folder for metrics.json, tables, per-image CSVs and figures "
                        "(default: RUN_DIR/eval)")
    parser.add_argument("--no-plots", action="store_true", help="metrics and tables only")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the run's config")
    # Intermixed: options may come before or after the key=value overrides.
    args = parser.parse_intermixed_args(argv)
    from mmdist.engine.distributed import RankDiscoveryError, discover_ranks, export_rank_env
    from mmdist.evaluation.evaluate import evaluate_run

    try:
        info = discover_ranks()  # torchrun, mpirun or srun, as for training
    except RankDiscoveryError as exc:
        return report("evaluate", exc)
    distributed, rank = info.is_distributed, info.rank
    if distributed:
        export_rank_env(info)
        # One gather per test set; gloo carries the pickled per-image rows on CPU and GPU alike.
        dist.init_process_group("gloo", init_method="env://", rank=info.rank,
                                world_size=info.world_size, timeout=timedelta(minutes=10))
    try:
        summary = evaluate_run(args.run_dir, args.checkpoint, args.overrides,
                               plots_on=not args.no_plots, weights=args.weights,
                               out_dir=args.out)
    except user_errors() as exc:  # a bug of mmdist keeps its traceback
        return report("evaluate", exc)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        out = args.out or f"{args.run_dir}/eval"
        for line in summary["warnings"]:
            print(f"evaluate: warning: {line}", file=sys.stderr)
        print(f"{summary['checkpoint']} (step {summary['step']}, {summary['weights']} weights)")
        print(json.dumps(summary["test_sets"], sort_keys=True))
        print(f"wrote {out}/metrics.json and {out}/table_row.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
