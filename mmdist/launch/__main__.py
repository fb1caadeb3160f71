"""``python -m mmdist.launch``: submit one training run to SLURM through submitit.

    python -m mmdist.launch --nodes 2 --gpus-per-node 8 --partition gpu --time 1440 \\
        --config configs/default.yaml output_dir=runs/big engine.strategy=ddp
    python -m mmdist.launch --local --config configs/tiny.yaml      # same job, no SLURM

Prints the job id, the log files and the TensorBoard folder. ``--wait`` follows the job to its
end and exits with its status (0 completed, 1 failed, 3 stopped without requeue); ``--local``
always waits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmdist.config import ConfigError, load_config
from mmdist.launch.submit import (EVALUATE_CHOICES, SlurmOptions, TrainJob, build_executor, follow,
                                  resolve_cpus_per_task, slurm_unreachable)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m mmdist.launch",
                                     description="Submit one training run through submitit.")
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_steps=50")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--tasks-per-node", type=int, default=None,
                        help="ranks per node (default: one per GPU, or 1 without GPUs)")
    parser.add_argument("--cpus-per-task", type=int, default=None,
                        help="CPUs (and torch threads) per rank; default: a node's CPUs divided "
                             "among its ranks")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--time", type=int, default=60, dest="time_min", help="time limit, minutes")
    parser.add_argument("--mem-gb", type=float, default=None)
    parser.add_argument("--job-name", default="mmdist")
    parser.add_argument("--max-requeues", type=int, default=20,
                        help="time-limit requeues before giving up")
    parser.add_argument("--evaluate", choices=EVALUATE_CHOICES, default="none",
                        help="after training: test-set metrics (eval/metrics.json), also plots")
    parser.add_argument("--wait", action="store_true", help="follow the job and exit with its status")
    parser.add_argument("--wait-timeout", type=float, default=None, help="seconds; default: no limit")
    parser.add_argument("--local", action="store_true", help="run here, without SLURM")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        options = SlurmOptions(nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                               tasks_per_node=args.tasks_per_node, cpus_per_task=args.cpus_per_task,
                               partition=args.partition, account=args.account,
                               time_min=args.time_min, mem_gb=args.mem_gb,
                               max_requeues=args.max_requeues, job_name=args.job_name)
    except ValueError as exc:
        print(f"argument error: {exc}", file=sys.stderr)
        return 2
    ranks = options.nodes * options.ranks_per_node
    from mmdist.data.records import DatasetError
    from mmdist.data.task_data import check_source_paths
    from mmdist.engine.strategies import LaunchError, resolved_strategy_name

    try:
        resolved_strategy_name(config.engine, ranks)
        check_source_paths(config)  # before the job waits in a queue only to fail at start
    except (LaunchError, DatasetError) as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 2
    if not args.local:
        reason = slurm_unreachable()
        if reason:
            print(f"launch: no SLURM controller reachable ({reason}); to run the job on this "
                  f"machine instead: python -m mmdist.launch --local --config {args.config} ...",
                  file=sys.stderr)
            return 2
    cpus, why = resolve_cpus_per_task(options, local=args.local)
    # The job may start in another folder: pin the run directory now.
    config.output_dir = str(Path(config.output_dir).resolve())
    run_dir = Path(config.output_dir)
    executor = build_executor(run_dir / "submitit", options, local=args.local)
    job = executor.submit(TrainJob(config.to_dict(), evaluate=args.evaluate))
    task0 = job.task(0) if job.num_tasks > 1 else job
    print(f"job:         {job.job_id} ({ranks} rank{'s' if ranks > 1 else ''} on "
          f"{options.nodes} node{'s' if options.nodes > 1 else ''})")
    print(f"stdout:      {task0.paths.stdout}")
    print(f"stderr:      {task0.paths.stderr}")
    print(f"cpus/rank:   {cpus} ({why}; the torch threads of each rank)")
    print(f"run dir:     {run_dir}")
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    sys.stdout.flush()
    if not (args.wait or args.local):
        return 0
    outcome = follow(job, timeout_s=args.wait_timeout)
    print(f"job {outcome.job_id}: {outcome.status}")
    if outcome.summary:
        print(json.dumps(outcome.summary, sort_keys=True))
    if outcome.error:
        print(outcome.error, file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
