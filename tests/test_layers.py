"""Imports point down only: every module of mmdist, parsed with ``ast``, imports (at top level or
inside a function) only modules of its own layer or of a lower one.

The layer order below is the one place it is written; the README's "How the parts fit" draws it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmdist"

LAYERS: tuple[tuple[str, ...], ...] = (
    # config/variants.py (the variant table, the stream names, the saliency rule) is a leaf of
    # this layer, so that config validates a variant without importing the model.
    ("config",),
    ("data",),
    ("augment",),
    # The network and its objectives: neither builds on the other's internals, both read data's
    # batch types and the config.
    ("model", "losses"),
    # runtime_check.py (CUDA builds against the driver) imports nothing of mmdist; it sits with
    # the engine, which owns the device, so that both the engine and the entries may ask it.
    ("engine", "runtime_check"),
    # Tools over a trained or training model; each has its own `python -m` entry.
    ("launch", "evaluation", "bench", "export", "gpucheck"),
    # The command-line entries.
    ("train", "evaluate", "predict", "prepare", "sweep", "cli", "__main__"),
)
"""Lowest first. A name is a subpackage or a top-level module of mmdist; a module may import its
own layer and any layer listed before it."""

LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}

ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    # (importing module, imported module): why it is still here. Each entry must still be found
    # (test_allowed_upward_imports_are_still_needed), so the list only shrinks.
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> set[str]:
    """Every mmdist module ``path`` imports, by absolute dotted name (relative imports resolved;
    ``from mmdist.x import y`` counts as mmdist.x, whose layer is y's too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "mmdist":  # from mmdist import data: the submodules themselves
                names.update(f"mmdist.{alias.name}" for alias in node.names)
            else:
                names.add(target)
    return {n for n in names if n == "mmdist" or n.startswith("mmdist.")}


def _layer(module: str) -> int | None:
    """The layer of a dotted mmdist module name; None for the package root (it imports nothing)."""
    parts = module.split(".")
    return LAYER_OF[parts[1]] if len(parts) > 1 else None


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _upward_imports() -> set[tuple[str, str]]:
    found = set()
    for path in _modules():
        name = _module_name(path)
        own = _layer(name)
        for target in _imported_modules(path):
            layer = _layer(target)
            if own is not None and layer is not None and layer > own:
                found.add((name, target))
    return found


def test_every_part_of_the_package_has_a_layer():
    """A new subpackage or top-level module must be placed in LAYERS before it can be checked."""
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert tops - {"__init__"} <= set(LAYER_OF), \
        f"place these in LAYERS: {sorted(tops - {'__init__'} - set(LAYER_OF))}"


def test_no_module_imports_a_higher_layer():
    upward = _upward_imports() - set(ALLOWED_UPWARD)
    assert not upward, "imports pointing up (importer -> imported):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in sorted(upward))


@pytest.mark.parametrize("entry", sorted(ALLOWED_UPWARD) or [None])
def test_allowed_upward_imports_are_still_needed(entry):
    if entry is None:
        pytest.skip("ALLOWED_UPWARD is empty")
    assert entry in _upward_imports(), f"{entry} no longer imports upward: remove it from ALLOWED_UPWARD"


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The parser finds an upward import hidden in a function and a relative one (what
    config/tree.py once did with the variant table)."""
    package = tmp_path / "mmdist"
    (package / "config").mkdir(parents=True)
    (package / "model").mkdir()
    (package / "__init__.py").write_text("")
    (package / "config" / "__init__.py").write_text("")
    (package / "model" / "__init__.py").write_text("")
    (package / "model" / "table.py").write_text("X = 1\n")
    (package / "config" / "tree.py").write_text(
        "def f():\n    from mmdist.model.table import X\n    from ..model import table\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert _upward_imports() == {("mmdist.config.tree", "mmdist.model.table"),
                                 ("mmdist.config.tree", "mmdist.model")}
