"""Loading: YAML (with ``base:`` inheritance) and dotted overrides into the typed tree.

Every key is checked against the dataclass fields: an unknown key or a value of the wrong type
raises ConfigError naming the dotted key path (and, for unknown keys, the nearest valid key).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mmdist.config.errors import ConfigError
from mmdist.config.tree import Config


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if len(options) < len(typing.get_args(tp)) and value is None:
            return None
        if len(options) == 1:  # Optional[X]: X's own error, with its own key path
            return _coerce(value, options[0], key)
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(f"{key}: {value!r} does not fit {_type_name(tp)} ({'; '.join(errors)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string: accept numeric text for float keys.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    path = f"{prefix}.{key}" if prefix else key
    hint = f"; did you mean {(prefix + '.' if prefix else '') + near[0]!r}?" if near else ""
    return ConfigError(f"{path}: unknown key{hint} (valid keys here: {', '.join(names)})")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints or key not in {f.name for f in dataclasses.fields(cls)}:
            raise _unknown_key(cls, str(key), prefix)
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)  # each section's own checks name their full dotted keys


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """Read a YAML file whose top level is a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def read_yaml_tree(path: str | Path) -> dict:
    """Read a config file and its ``base:`` chain into one nested dict."""
    path = Path(path)
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml_tree(path.parent / base), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'trainer.max_steps=50'`` -> (['trainer', 'max_steps'], 50); values parse as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.split("."), value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    tree = dict(tree)
    for text in overrides:
        parts, value = parse_override(text)
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return tree


def from_dict(data: dict) -> Config:
    return _build(Config, data)


RUN_LENGTH = ("max_steps", "max_epochs")
"""trainer keys that each set the run's length; a config sets one (the other null)."""


def command_line_length_wins(tree: dict, overrides: list[str]) -> dict:
    """When the overrides set one of trainer.max_steps / max_epochs (to a value) and not the
    other, the other is null whatever the file (or the default max_steps) says:
    ``trainer.max_steps=20`` on a recipe that counts epochs runs 20 steps. Both in the file, or
    both on the command line, stay an error."""
    given = {tuple(key): value for key, value in
             (parse_override(text) for text in overrides)}
    trainer = tree.get("trainer")
    for key, other in (RUN_LENGTH, RUN_LENGTH[::-1]):
        if given.get(("trainer", key)) is not None and ("trainer", other) not in given:
            trainer = {**(trainer if isinstance(trainer, dict) else {}), other: None}
            tree = dict(tree, trainer=trainer)
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides
    (a run length on the command line replaces the file's: command_line_length_wins)."""
    tree = read_yaml_tree(path) if path is not None else {}
    tree = command_line_length_wins(tree, list(overrides))
    return from_dict(apply_overrides(tree, list(overrides)))


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with load_config)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
