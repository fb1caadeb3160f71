"""The `mmdist` command: every tool behind one entry, declared in pyproject.toml."""

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

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


def test_every_declared_dependency_is_imported():
    """What pyproject.toml declares, mmdist or its tests import (a dependency nothing uses only
    slows every install)."""
    import re

    import_name = {"pyyaml": "yaml", "pillow": "PIL", "scikit-image": "skimage",
                   "scikit-learn": "sklearn"}
    used_without_import = {"onnxscript": "torch.onnx's exporter imports it (mmdist.export)"}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    sources = "\n".join(p.read_text() for folder in ("mmdist", "tests")
                        for p in (REPO / folder).rglob("*.py"))
    for requirement in declared:
        name = re.split(r"[<>=!~ \[;]", requirement, 1)[0].lower()
        if name in used_without_import:
            continue
        module = import_name.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), \
            f"{name} is declared in pyproject.toml but nothing imports {module}"


# ---- the one contract at the edges (mmdist.engine.user_errors) --------------------------------


def _run(tmp_path: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m mmdist ARGS`` (or ``python -c CODE``) in a fresh interpreter, as a user
    starts it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "mmdist", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _one_line_exit_2(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_without_checkpoints(tmp_path) -> Path:
    """A run folder with its config.yaml and no checkpoint."""
    from mmdist.config import dump_config, load_config

    run = tmp_path / "run"
    run.mkdir()
    dump_config(load_config(REPO / "configs" / "tiny.yaml"), run / "config.yaml")
    return run


def test_files_the_user_named_are_one_line_errors(tmp_path, run_without_checkpoints):
    """A missing file or folder named on the command line (a run folder, a checkpoint, a sweep
    folder, an evaluated run's metrics.json, a dataset, a config file): one line naming it, exit
    2, at every entry."""
    run = run_without_checkpoints
    gone = tmp_path / "gone"
    _one_line_exit_2(_run(tmp_path, "train", "--config", str(gone / "x.yaml")), str(gone))
    _one_line_exit_2(_run(tmp_path, "evaluate", str(run)), f"{run}/checkpoints: no best.pt")
    _one_line_exit_2(_run(tmp_path, "evaluate", str(gone)), str(gone / "config.yaml"))
    _one_line_exit_2(_run(tmp_path, "export", str(gone / "c.pt"), "--format", "onnx"),
                     str(gone / "c.pt"))
    _one_line_exit_2(_run(tmp_path, "predict", str(gone / "c.pt"), str(tmp_path / "x.png")),
                     str(gone / "c.pt"))
    _one_line_exit_2(_run(tmp_path, "tables", str(run)), str(run / "eval" / "metrics.json"))
    _one_line_exit_2(_run(tmp_path, "sweep", "--collect", str(gone)), str(gone))
    _one_line_exit_2(_run(tmp_path, "prepare", "--dataset", "kermany", "--src", str(gone),
                          "--out", str(tmp_path / "cache"), "--no-progress"), str(gone))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_a_device_that_is_not_there_names_the_option_that_asked_for_it(tmp_path):
    line = _one_line_exit_2(_run(tmp_path, "predict", "--device", "cuda", str(tmp_path / "c.pt"),
                                 str(tmp_path / "x.png")), "--device=cuda: torch sees no CUDA")
    assert "engine.device" not in line  # predict has no config: its option is what to change


# Each entry with one of its inner functions turned into a bug: an exception of a type that
# input errors were once reported as (FileNotFoundError, RuntimeError, ValueError), raised where
# no user input enters.
BUGS = {
    "train": ("mmdist.engine.trainer", "Trainer.fit", "FileNotFoundError",
              ["train", "--config", "configs/tiny.yaml", "output_dir={tmp}/run"]),
    "evaluate": ("mmdist.evaluation.evaluate", "evaluate_run", "RuntimeError",
                 ["evaluate", "{tmp}"]),
    "predict": ("mmdist.evaluation.predict", "load_network", "RuntimeError",
                ["predict", "{tmp}/c.pt", "{tmp}/x.png"]),
    "export": ("mmdist.evaluation.trained_model", "load_model", "RuntimeError",
               ["export", "configs/tiny.yaml", "--format", "onnx"]),
    "sweep": ("mmdist.sweep", "collect", "ValueError", ["sweep", "--collect", "{tmp}"]),
    "tables": ("mmdist.evaluation.tables", "write_sweep_table", "FileNotFoundError",
               ["tables", "{tmp}"]),
}


@pytest.mark.parametrize("entry", sorted(BUGS))
def test_a_bug_keeps_its_traceback(tmp_path, entry):
    module, function, error, args = BUGS[entry]
    owner, _, name = function.rpartition(".")
    target = f"{module}.{owner}" if owner else module
    code = (f"import sys, {module}, mmdist.cli\n"
            f"def bug(*args, **kwargs):\n"
            f"    raise {error}('internal state file lost by mmdist itself')\n"
            f"setattr({target}, {name!r}, bug)\n"
            f"sys.exit(mmdist.cli.main({[a.format(tmp=tmp_path) for a in args]!r}))\n")
    done = _run(tmp_path, code=code)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and f"{error}: internal state file lost" in done.stderr, \
        done.stderr[-3000:]
