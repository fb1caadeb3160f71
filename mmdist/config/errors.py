"""The one error type of the config layer, and the check every section validates with."""


class ConfigError(ValueError):
    """A configuration key or value is invalid. The message names the dotted key."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError('key: message') unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}: {message}")
