"""Entry point: ``python -m mmdist.train --config FILE [key=value ...]``.

Exit status: 0 completed, 3 stopped by a signal after a checkpoint (resume with
trainer.resume=true), 2 a config, data or launch error (one line on stderr naming the key, file or
variable: mmdist.engine.user_errors), 1 anything else (with its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from mmdist.config import ConfigError, load_config
from mmdist.engine.user_errors import USAGE_ERROR, report, user_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdist.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    from mmdist.engine.console import resume_hint
    from mmdist.engine.sync_points import TooManySkippedSteps
    from mmdist.engine.trainer import Trainer

    trainer = None
    try:
        trainer = Trainer(config)
        trainer.install_signal_handlers()
        summary = trainer.fit()
        if trainer.strategy.is_main:
            print(f"run directory: {config.output_dir}")
            print(f"TensorBoard:   tensorboard --logdir {config.output_dir}/tb")
            print(f"summary:       {config.output_dir}/summary.json")
            print(json.dumps(summary, sort_keys=True))
            if summary["status"] != "completed":
                print(resume_hint(config.output_dir, summary["steps"]), file=sys.stderr)
    except (*user_errors(), TooManySkippedSteps) as exc:
        return report("train", exc)
    finally:
        if trainer is not None:  # on every path, exceptions included: wrapper, then group
            trainer.close()
    return 0 if summary["status"] == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
