"""The error types of the user's input that every layer may raise, and the check every config
section validates with. Each prints as one line at the command line (mmdist.engine.user_errors)."""


class ConfigError(ValueError):
    """A configuration key or value is invalid. The message names the dotted key."""


class InputError(Exception):
    """A file or folder the user named holds not what the command reads (a sweep folder without
    cells, a run folder without its evaluation). The message names it."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder the user named (a checkpoint, a run or sweep folder) does not exist. The
    message names it, and the key or argument that named it. A FileNotFoundError of any other
    kind is a bug in mmdist, not the user's input, and keeps its traceback."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError('key: message') unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}: {message}")
