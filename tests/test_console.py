"""What a run tells its console: the run folder at start, a line per validation with the best so
far, plain progress lines without a terminal, and the command that resumes a stopped run."""

from __future__ import annotations

import io
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmdist.config import load_config
from mmdist.engine import console
from test_train_cli import clean_env

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def test_without_a_terminal_progress_is_a_line_every_n_steps():
    stream = io.StringIO()  # not a terminal, as a batch job's log
    bar = console.progress_bar(total=25, initial=0, desc="multimix", enabled=True, every=10,
                               stream=stream)
    assert isinstance(bar, console.LineProgress)
    for step in range(1, 26):
        bar.update(1)
        if step % 5 == 0:  # the loss is logged after the step's update, as the trainer does
            bar.set_postfix(loss=f"{step / 100:.2f}")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(" (")[0] for line in lines] == [
        "multimix: step 10/25", "multimix: step 20/25", "multimix: step 25/25"]
    assert lines[0].endswith("loss=0.10") and lines[1].endswith("loss=0.20")  # that step's
    assert "(40%)" in lines[0]
    quiet = io.StringIO()
    off = console.progress_bar(25, 0, "x", enabled=False, every=1, stream=quiet)
    off.update(5)
    off.close()
    assert quiet.getvalue() == ""


def test_validation_line_names_metrics_and_the_best_so_far():
    line = console.validation_line(40, 365, {"val_acc": 0.743, "val_bacc": 0.5, "val_dice": 0.61,
                                             "val_one_class": 1.0},
                                   {"metric": "val_mean", "weights": "raw", "step": 20,
                                    "value": 0.677})
    assert line == ("validation at step 40/365: acc 0.743 bacc 0.500 dice 0.610 | ONE CLASS "
                    "predicted for every image | best val_mean 0.677 (step 20)")


def test_a_run_names_its_folder_at_start_and_prints_each_validation(tmp_path, capsys):
    from mmdist.engine.trainer import Trainer

    run = tmp_path / "run"
    config = load_config(TINY, [f"output_dir={run}", "trainer.max_steps=2", "trainer.val_every=1",
                                "trainer.checkpoint_every=0", "trainer.image_log_every=0",
                                "data.classification.count=40", "data.segmentation.count=20",
                                "model.width=0.125"])
    summary = Trainer(config).fit()
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"mmdist: run folder {run} (tensorboard --logdir {run / 'tb'})"
    validations = [line for line in out if line.startswith("validation at step")]
    assert [line.split(":")[0] for line in validations] == ["validation at step 1/2",
                                                            "validation at step 2/2"]
    assert f"best val_mean {summary['best_value']:.3f} (step {summary['best_step']})" in \
        validations[-1]
    assert f"acc {summary['val_acc']:.3f} bacc {summary['val_bacc']:.3f}" in validations[-1]
    # the run's split is written beside it, one part per task
    split = json.loads((run / "split.json").read_text())
    assert sorted(split) == ["classification", "format", "segmentation"]
    assert split["segmentation"]["patient_disjoint"] is True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_stopped_run_says_how_to_resume_and_that_command_completes_it(tmp_path):
    run, total = tmp_path / "run", 150
    env = clean_env(tmp_path)
    quiet = ["trainer.image_log_every=0", "trainer.val_every=0", "trainer.checkpoint_every=0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mmdist.train", "--config", str(TINY), f"output_dir={run}",
         f"trainer.max_steps={total}", *quiet], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "tb").is_dir() or not list((run / "tb").iterdir()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    err = process.stderr.read()
    assert code == 3, err[-3000:]
    stopped = json.loads((run / "summary.json").read_text())["steps"]
    hint = f"stopped at step {stopped} after a checkpoint; resume with: "
    (line,) = [line for line in err.splitlines() if line.startswith(hint)]
    command = shlex.split(line[len(hint):])
    assert command[:3] == ["python", "-m", "mmdist.train"]
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["start_step"], summary["steps"]) == (
        "completed", stopped, total)
