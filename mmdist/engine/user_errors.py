"""The one contract at the command-line edges.

An error that is the user's input at fault prints as one line on stderr, naming the dotted key,
file or variable, and the command exits 2. Each is raised where the input enters:

- ConfigError: a config key or value (mmdist.config, naming the dotted key);
- DatasetError: a dataset folder, file or row (mmdist.data);
- DeviceError: a device that is not there (engine.device, mmdist.engine.devices);
- CheckpointError: a checkpoint that is unreadable, foreign, of another network, or a used run
  folder (mmdist.engine.checkpoint, run_folder, the DeepSpeed shards);
- RankDiscoveryError, LaunchError: launcher variables, and an engine that does not fit the ranks;
- InputError, InputNotFoundError: a file or folder named on the command line or in the config
  that is missing or holds not what the command reads.

Anything else, a FileNotFoundError, ValueError or RuntimeError included, is a bug in mmdist and
keeps its traceback (exit 1): the entry modules catch ``user_errors()`` and nothing broader.
"""

from __future__ import annotations

import sys

USAGE_ERROR = 2
"""Exit status of a command whose input is at fault."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The input error types above. Imported when called, so that an entry module reads its
    config before torch is imported."""
    from mmdist.config.errors import ConfigError, InputError
    from mmdist.data.records import DatasetError
    from mmdist.engine.checkpoint import CheckpointError
    from mmdist.engine.devices import DeviceError
    from mmdist.engine.distributed import RankDiscoveryError
    from mmdist.engine.strategies import LaunchError

    return (ConfigError, InputError, DatasetError, DeviceError, CheckpointError,
            RankDiscoveryError, LaunchError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a wrapped library message may span several)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def report(program: str, exc: BaseException) -> int:
    """Print ``program: message`` as one line on stderr; returns USAGE_ERROR."""
    print(f"{program}: {one_line(exc)}", file=sys.stderr)
    return USAGE_ERROR
