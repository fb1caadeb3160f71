"""``python -m mmdist.bench NAME [options]``: run one benchmark, print one JSON line.

Each benchmark is a module ``mmdist.bench.NAME`` with ``add_arguments(parser)`` and
``run(args) -> dict``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS = {
    "step": "training steps of a variant on random data",
    "augment": "weak + strong view throughput of a five-stream step (torch or DALI)",
    "feed": "host milliseconds per step of the data path: batches built, pinned, moved, normalised",
    "prepare": "mmdist.prepare throughput and memory on a generated pool",
    "ddp": "distributed scaling, communication share and saliency overhead",
    "eval": "segmentation metrics per image, fast definitions against scikit-image's",
    "fidelity": "the paper's arms on the real subsets: test-set scores per step budget and seed",
    "pack": "K training steps as separate processes on one device: per-run and aggregate speed",
}


def _check_gpu_asked(args) -> None:
    """A GPU asked for with --device and not there is one line naming --device, before any work
    (bench pack would start its child processes, each failing with a traceback)."""
    wanted = getattr(args, "device", None)
    if wanted in ("cuda", "gpu"):
        from mmdist.engine.devices import resolve_device

        resolve_device(wanted, key="--device")  # 'gpu' (bench augment) is checked as CUDA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    for name, help_text in BENCHMARKS.items():
        try:
            module = importlib.import_module(f"mmdist.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mmdist.bench.{name}":
                raise
            continue
        module.add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    from mmdist.engine.user_errors import report, user_errors

    try:
        _check_gpu_asked(args)
        result = importlib.import_module(f"mmdist.bench.{args.name}").run(args)
    except user_errors() as exc:  # e.g. --device cuda without a GPU; a bug keeps its traceback
        return report(f"bench {args.name}", exc)
    print(json.dumps({"benchmark": args.name, **result}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
