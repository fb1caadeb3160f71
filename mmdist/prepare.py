"""``python -m mmdist.prepare``: prepare a dataset folder into a memory-mapped cache.

    python -m mmdist.prepare --dataset nih --src /data/ChestX-ray14 --out /data/nih-256 \
        --size 256 --workers 16 --option views=[PA]

The last line printed is the one-line JSON summary (records, rejects with their paths, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from mmdist.data.adapters import ADAPTERS
from mmdist.data.cache_writer import prepare_dataset
from mmdist.data.records import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmdist.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(ADAPTERS))
    parser.add_argument("--src", required=True, help="dataset folder in its published layout")
    parser.add_argument("--out", required=True, help="cache folder to write (resumed if present)")
    parser.add_argument("--size", type=int, default=256, help="square output size in pixels")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="images per unit of work (an interrupted run redoes at most one)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="adapter option, value parsed as YAML (e.g. views=[PA], "
                             "positive=Pneumonia, max_per_patient=1); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise DatasetError(f"--option {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_dataset(args.dataset, args.src, args.out, size=args.size,
                                  workers=args.workers, chunk_size=args.chunk_size,
                                  progress=not args.no_progress, **parse_options(args.option))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
