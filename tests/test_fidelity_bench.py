"""The fidelity benchmark on the real subsets: a small run of it writes its table, and its
premise holds: a budget's checkpoint of the longer run is the shorter run itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
NEEDED = ("kermany-pneumonia-224", "shenzhen-lungseg", "montgomery-lungseg")

pytestmark = pytest.mark.skipif(
    not all((DATA / name / "labels.csv").is_file() for name in NEEDED),
    reason=f"the real subsets are not at {DATA} ({', '.join(NEEDED)})")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_small_fidelity_run_scores_every_arm_budget_and_weights(tmp_path):
    out = tmp_path / "fidelity"
    command = [sys.executable, "-m", "mmdist.bench", "fidelity", "--budgets", "2", "4",
               "--val-every", "2", "--seeds", "0", "1", "--arms", "multimix detached", "unet",
               "--size", "64", "--out", str(out), "--data", str(DATA)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=850,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "fidelity.json").read_text())
    assert len(report["results"]) == 4
    rows = {(r["arm"], r["weights"], r["steps"]): r for r in report["rows"]}
    assert len(rows) == 2 * 3 * 2  # arms x (raw, ema, selected) x budgets
    multimix = rows["multimix detached", "ema", 4]
    for label in ("Shenzhen Dice", "Montgomery Dice", "Kermany acc", "Kermany AUC"):
        assert len(multimix[label]["values"]) == 2  # one per seed
    unet = rows["unet", "raw", 4]
    assert "Kermany acc" not in unet and "p_vs_reference" in unet["Shenzhen Dice"]
    assert "| unet | selected | 4 |" in (out / "fidelity.md").read_text()
    # Only the budgets' checkpoints are kept.
    run = Path(report["results"][0]["run_dir"])
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == [
        "step_00000002.pt", "step_00000004.pt"]

    # A later benchmark with a larger budget trains the finished runs on instead of reusing them.
    longer = subprocess.run(
        [sys.executable, "-m", "mmdist.bench", "fidelity", "--budgets", "2", "6", "--val-every",
         "2", "--seeds", "0", "--arms", "unet", "--size", "64", "--out", str(out), "--data",
         str(DATA)], cwd=REPO, capture_output=True, text=True, timeout=850,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert longer.returncode == 0, longer.stderr[-3000:]
    (again,) = json.loads((out / "fidelity.json").read_text())["results"]
    assert again["arm"] == "unet" and not again["reused"]
    unet_run = Path(again["run_dir"])
    assert json.loads((unet_run / "summary.json").read_text())["steps"] == 6
    assert again["scores"]["raw@6"]["step"] == 6 and again["scores"]["raw@2"]["step"] == 2

    # The premise: a 2-step run is the 4-step run's step-2 checkpoint, bit for bit.
    from mmdist.config import load_config
    from mmdist.engine import checkpoint as ckpt
    from mmdist.engine.trainer import Trainer

    config = load_config(run / "config.yaml", [f"output_dir={tmp_path / 'short'}",
                                               "trainer.max_steps=2", "trainer.resume=false"])
    Trainer(config).fit()
    short = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "short", 2))
    long = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 2))
    for name, tensor in short["model"].items():
        assert torch.equal(tensor, long["model"][name]), name
    for name, tensor in short["ema"]["model"].items():
        assert torch.equal(tensor, long["ema"]["model"][name]), name
