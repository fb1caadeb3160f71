"""Entry point: ``python -m mmdist.train --config FILE [key=value ...]``."""

from __future__ import annotations

import argparse
import json
import sys

from mmdist.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.train", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from mmdist.engine.trainer import Trainer

    trainer = Trainer(config)
    trainer.install_signal_handlers()
    summary = trainer.fit()
    if trainer.strategy.is_main:
        print(f"run directory: {config.output_dir}")
        print(f"TensorBoard:   tensorboard --logdir {config.output_dir}/tb")
        print(f"summary:       {config.output_dir}/summary.json")
        print(json.dumps(summary, sort_keys=True))
    trainer.strategy.close()
    return 0 if summary["status"] == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
