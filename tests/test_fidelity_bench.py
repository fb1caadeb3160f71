"""The fidelity benchmark: its table (seed-paired t-tests) on made-up results, and on the real
subsets a small run of it writes that table, and its premise holds: a budget's checkpoint of the
longer run is the shorter run itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
NEEDED = ("kermany-pneumonia-224", "shenzhen-lungseg", "montgomery-lungseg")

needs_data = pytest.mark.skipif(
    not all((DATA / name / "labels.csv").is_file() for name in NEEDED),
    reason=f"the real subsets are not at {DATA} ({', '.join(NEEDED)})")


def _result(arm: str, seed: int, dice: float, acc: float | None = None) -> dict:
    """A made-up run: the same scores at every weights and budget except raw@4 (dice + 0.1)."""
    scores = {}
    for weights in ("raw", "ema", "selected"):
        for budget in (2, 4):
            entry = {"step": budget, "Shenzhen Dice": dice + (0.1 if (weights, budget) == ("raw", 4) else 0)}
            if acc is not None:
                entry["Kermany acc"] = acc
            scores[f"{weights}@{budget}"] = entry
    return {"arm": arm, "seed": seed, "scores": scores}


def test_table_pairs_seeds_and_tests_them():
    """Mean ± std over seeds, and the paired t-test against multimix on the same seeds: results
    listed in another seed order are paired by seed, a seed the reference lacks is averaged but
    not paired, a metric an arm lacks is '-'."""
    from scipy import stats

    from mmdist.bench.fidelity import _table

    reference = {0: 0.70, 1: 0.80, 2: 0.75}
    unet = {2: 0.71, 0: 0.69, 1: 0.76, 3: 0.50}  # seed 3: no reference run to pair with
    results = [_result("multimix detached", s, d, acc=0.6 + s / 100) for s, d in reference.items()]
    results += [_result("unet", s, d) for s, d in unet.items()]
    text, rows = _table(results, [2, 4])
    row = next(r for r in rows if (r["arm"], r["weights"], r["steps"]) == ("unet", "ema", 2))
    dice = row["Shenzhen Dice"]
    assert dice["values"] == [0.69, 0.76, 0.71, 0.50]  # by seed
    assert dice["mean"] == pytest.approx(np.mean([0.69, 0.76, 0.71, 0.50]))
    assert dice["std"] == pytest.approx(np.std([0.69, 0.76, 0.71, 0.50], ddof=1))
    # Paired by seed (0, 1, 2): differences -0.01, -0.04, -0.04, by hand.
    differences = np.array([0.69 - 0.70, 0.76 - 0.80, 0.71 - 0.75])
    t = differences.mean() / (differences.std(ddof=1) / np.sqrt(3))
    p = 2 * stats.t.sf(abs(t), df=2)
    assert dice["p_vs_reference"] == pytest.approx(p, rel=1e-9)
    unpaired = stats.ttest_rel([0.71, 0.69, 0.76], [0.70, 0.80, 0.75]).pvalue  # listing order
    assert abs(unpaired - p) > 0.05  # so pairing by position would have failed above
    assert "Kermany acc" not in row and "p_vs_reference" not in next(
        r for r in rows if r["arm"] == "multimix detached")["Shenzhen Dice"]
    # The same row in Markdown, and raw@4 is its own row (each budget and weights scored apart).
    assert (f"| unet | ema | 2 | {dice['mean']:.3f} ± {dice['std']:.3f} (p={p:.2f}) | - | - | - |"
            in text.splitlines())
    raw4 = next(r for r in rows if (r["arm"], r["weights"], r["steps"]) == ("unet", "raw", 4))
    assert raw4["Shenzhen Dice"]["mean"] == pytest.approx(dice["mean"] + 0.1)
    assert len(rows) == 2 * 3 * 2  # arms x weights x budgets


@needs_data
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


def _args(tmp_path, **changes):
    from argparse import ArgumentParser

    from mmdist.bench.fidelity import add_arguments

    parser = ArgumentParser()
    add_arguments(parser)
    data = tmp_path / "data"
    for name in NEEDED:  # run() only checks that the subsets are there; nothing is trained here
        (data / name).mkdir(parents=True, exist_ok=True)
        (data / name / "labels.csv").write_text("name\n")
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), "--budgets", "2", "4",
            "--val-every", "2", "--seeds", "0", "1", "--arms", "multimix detached", "unet"]
    args = parser.parse_args(argv)
    for key, value in changes.items():
        setattr(args, key, value)
    return args


def test_reuse_takes_only_runs_with_the_same_settings_and_every_budget(tmp_path, capsys):
    """A benchmark split over days: --reuse takes an earlier file's (arm, seed) only when it was
    trained the same way and scored every budget asked for; then nothing is trained and the table
    holds the earlier scores."""
    from mmdist.bench.fidelity import _settings, load_reusable, run

    args = _args(tmp_path)
    same = {a: _settings(args, a) for a in ("multimix detached", "unet")}
    results = [{**_result("multimix detached", s, 0.7 + s / 10), "settings": same["multimix detached"]}
               for s in (0, 1)]
    results.append({**_result("unet", 0, 0.6), "settings": same["unet"]})
    other = _args(tmp_path, size=64)  # trained at another size: a different run
    results.append({**_result("unet", 1, 0.5), "settings": _settings(other, "unet")})
    short = {**_result("unet", 1, 0.4), "settings": same["unet"]}
    short["scores"] = {k: v for k, v in short["scores"].items() if k.endswith("@2")}
    results.append(short)  # lacks budget 4
    results.append({**_result("unet", 7, 0.3), "settings": same["unet"]})  # seed not asked for
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"results": results}))

    found = load_reusable(_args(tmp_path, reuse=[str(earlier)]))
    assert sorted(found) == [("multimix detached", 0), ("multimix detached", 1), ("unet", 0)]
    assert found["unet", 0]["scores"]["raw@2"]["Shenzhen Dice"] == 0.6
    assert "3 run(s) taken" in capsys.readouterr().out

    # With every run reusable, run() trains nothing and tables the earlier scores.
    results.append({**_result("unet", 1, 0.65), "settings": same["unet"]})
    earlier.write_text(json.dumps({"results": results}))
    run(_args(tmp_path, reuse=[str(earlier)]))
    table = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert [(r["arm"], r["seed"]) for r in table["results"]] == [
        ("multimix detached", 0), ("unet", 0), ("multimix detached", 1), ("unet", 1)]
    row = next(r for r in table["rows"] if (r["arm"], r["weights"], r["steps"]) == ("unet", "ema", 2))
    assert row["Shenzhen Dice"]["values"] == [0.6, 0.65]
    assert not (tmp_path / "out" / "runs").exists()


def test_reuse_of_a_file_that_is_not_a_benchmark_names_it(tmp_path):
    from mmdist.bench.fidelity import load_reusable

    bad = tmp_path / "notes.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="--reuse .*notes.json: not a fidelity.json"):
        load_reusable(_args(tmp_path, reuse=[str(bad)]))
