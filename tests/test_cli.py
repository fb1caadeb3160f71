"""The `mmdist` command: every tool behind one entry, declared in pyproject.toml."""

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmdist.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
EXPECTED = ("train", "evaluate", "predict", "prepare", "sweep", "launch", "bench", "export",
            "gpucheck", "tables")


def _listed(help_text: str) -> dict[str, str]:
    """{command: its line} from the 'commands:' block of `mmdist --help`."""
    block = help_text.split("commands:\n", 1)[1]
    return dict(line.strip().split(None, 1) for line in block.splitlines() if line.strip())


def test_help_lists_every_command_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = _listed(capsys.readouterr().out)
    assert sorted(listed) == sorted(EXPECTED)
    assert all(len(line) > 20 for line in listed.values()), listed


@pytest.mark.parametrize("command", EXPECTED)
def test_each_command_is_its_python_m_program(command, capsys):
    """`mmdist X --help` is `python -m mmdist.X --help`: the same module's parser answers."""
    module = importlib.import_module(COMMANDS[command][0])
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    ours = capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert ours == capsys.readouterr().out and ours.startswith("usage: ")


def test_a_command_returns_its_exit_status(capsys):
    assert main(["export", str(REPO / "no-such-run"), "--format", "torchscript"]) == 2
    assert "no-such-run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_declared_entry_point_and_python_m():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"mmdist": "mmdist.cli:main"}
    result = subprocess.run([sys.executable, "-m", "mmdist", "--help"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and sorted(_listed(result.stdout)) == sorted(EXPECTED)


def test_installed_console_script():
    """The script pip writes from [project.scripts] (present once `pip install -e .` ran)."""
    script = Path(sys.executable).with_name("mmdist")
    if not script.exists():
        script = shutil.which("mmdist")
        if script is None:
            pytest.skip("no installed `mmdist` script (pip install -e . writes it)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(_listed(result.stdout)) == sorted(EXPECTED)
