"""Sweeps without a cluster, through ``python -m mmdist.sweep``: --dry-run names the runs that
cells share (with a GPU-hours estimate), --collect tabulates the spec's cells only, an output_dir
override is refused, and --local keeps to slurm.array_parallelism."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path

import pytest

from slurm_cluster import REPO
from test_sweep import run_sweep, write_spec

from mmdist.config import dump_config, from_dict
from mmdist.launch.sweep_spec import load_spec
from mmdist.launch.sweep_state import read_state

PAPER_SPEC = REPO / "configs" / "sweeps" / "paper_table2.yaml"
CLS, SEG = "data.budget.classification_labeled", "data.budget.segmentation_labeled"


def test_dry_run_names_the_shared_runs_the_run_count_and_the_estimate(tmp_path, capsys):
    code, out, err = run_sweep(capsys, str(PAPER_SPEC), "--dry-run", "--output-dir", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sweep paper_table2: 405 cells -> 285 runs (120 cells reuse")
    assert "estimate:    none; add `estimate: {seconds_per_step: S}` to the spec" in out
    assert (f"missing   {tmp_path / 'unet_c100_s10_seed0'}  (also cells unet_c1000_s10_seed0, "
            "unet_cfull_s10_seed0)") in lines
    assert f"missing   {tmp_path / 'multimix_c100_s10_seed0'}" in lines
    assert sum(line.startswith("missing ") for line in lines) == 285
    assert not (tmp_path / "sweep.json").exists()  # a dry run writes nothing

    # With the spec's estimate, on the built-in data: 285 runs x 20000 steps x 0.5 s x 1 GPU.
    text = PAPER_SPEC.read_text().replace("config: ../paper/in_domain.yaml",
                                          f"config: {REPO / 'configs' / 'default.yaml'}")
    assert text != PAPER_SPEC.read_text()
    spec_path = tmp_path / "estimated.yaml"
    spec_path.write_text(text + "estimate: {seconds_per_step: 0.5}\n")
    code, out, err = run_sweep(capsys, str(spec_path), "--dry-run", "--output-dir", str(tmp_path))
    assert code == 0, err
    hours = 285 * 20000 * 0.5 / 3600
    assert f"estimate:    {hours:.1f} GPU-hours for 285 runs" in out
    assert f"not completed: {hours:.1f} for 285 runs" in out
    # The paper's recipe counts epochs: its data must be readable to count steps.
    spec_path.write_text(PAPER_SPEC.read_text().replace(
        "config: ../paper/in_domain.yaml", f"config: {REPO / 'configs' / 'paper' / 'in_domain.yaml'}")
        + "estimate: {seconds_per_step: 0.5}\n")
    code, out, err = run_sweep(capsys, str(spec_path), "--dry-run", "--output-dir", str(tmp_path))
    assert code == 0, err
    assert "estimate:    unknown: the runs count epochs and their data cannot be read here" in out
    # Runs of other lengths count their own steps, times the GPUs each run holds.
    spec_path = write_spec(tmp_path, """grid:
  model.variant: [unet, multimix]
  trainer.max_steps: [100, 300]
slurm: {gpus_per_node: 2}
estimate: {seconds_per_step: 2}
""")
    code, out, err = run_sweep(capsys, str(spec_path), "--dry-run", "--output-dir", str(tmp_path))
    assert code == 0, err
    assert f"estimate:    {2 * (100 + 300) * 2 * 2 / 3600:.1f} GPU-hours for 4 runs" in out
    assert "steps differ: 100 (2 runs), 300 (2 runs)" in out


def test_overrides_a_sweep_would_drop_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = str(REPO / "configs" / "sweeps" / "tiny.yaml")
    code, out, err = run_sweep(capsys, tiny, f"output_dir={tmp_path / 'elsewhere'}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "output_dir=" in err and "choose the sweep folder with --output-dir" in err
    # A grid key set on the command line would lose to each cell's own value.
    code, out, err = run_sweep(capsys, tiny, "model.variant=unet", "--dry-run")
    assert code == 2 and "model.variant is a grid key" in err
    assert not any(tmp_path.iterdir())


def fake_run(run, val_acc=None, val_dice=None) -> None:
    """A completed run folder as the trainer leaves it, with the given final validation metrics."""
    run.run_dir.mkdir(parents=True)
    dump_config(from_dict(run.config_tree), run.run_dir / "config.yaml")
    summary = {"status": "completed", "steps": 2}
    for key, value in (("val_acc", val_acc), ("val_dice", val_dice)):
        if value is not None:
            summary[key] = value
    (run.run_dir / "summary.json").write_text(json.dumps(summary))


def table_rows(sweep_dir: Path) -> dict[tuple, dict]:
    rows = csv.DictReader((sweep_dir / "table.csv").open())
    return {(r["variant"], r["classification_labeled"], r["segmentation_labeled"], r["metric"]): r
            for r in rows}


def test_collect_shows_a_shared_run_under_every_cell_and_ignores_stray_folders(tmp_path, capsys):
    spec_path = write_spec(tmp_path, f"""grid:
  model.variant: [unet, enc, multimix]
  {CLS}: [20, full]
  {SEG}: [6, 12]
  seed: [0, 1]
""")
    sweep_dir = tmp_path / "sweep"
    spec = load_spec(spec_path, sweep_dir)
    assert (len(spec.cells), len(spec.runs)) == (24, 16)
    dice, acc = {}, {}
    for i, run in enumerate(spec.runs):
        variant = run.config_tree["model"]["variant"]
        dice[run.name] = None if variant == "enc" else 0.5 + i / 100
        acc[run.name] = None if variant == "unet" else 0.6 + i / 100
        fake_run(run, acc[run.name], dice[run.name])
    # Folders an earlier grid left: completed, yet no cell of this spec.
    for folder, seed in (("unet_c20_s6_seed7", 7), ("unet_c1000_s6_seed0", 0)):
        tree = {**spec.runs[0].config_tree, "output_dir": str(sweep_dir / folder), "seed": seed}
        fake_run(dataclasses.replace(spec.runs[0], config_tree=tree), val_dice=0.0)

    code, out, err = run_sweep(capsys, "--collect", str(sweep_dir))
    assert code == 2 and "sweep.json lists no cells" in err and "--collect SPEC" in err
    code, out, err = run_sweep(capsys, "--collect", str(spec_path), "--output-dir", str(sweep_dir))
    assert code == 0, err
    rows = table_rows(sweep_dir)
    unet_s6 = statistics.mean(dice[f"unet_c20_s6_seed{s}"] for s in (0, 1))
    for cls_budget in ("20", "full"):  # the same two runs under both classification budgets
        row = rows[("unet", cls_budget, "6", "dice")]
        assert int(row["n"]) == 2 and float(row["mean"]) == pytest.approx(unet_s6)
    assert ("unet", "1000", "6", "dice") not in rows and ("unet", "20", "6", "acc") not in rows
    enc_full = statistics.mean(acc[f"enc_cfull_s6_seed{s}"] for s in (0, 1))
    for seg_budget in ("6", "12"):
        row = rows[("enc", "full", seg_budget, "acc")]
        assert int(row["n"]) == 2 and float(row["mean"]) == pytest.approx(enc_full)
    assert float(rows[("multimix", "full", "12", "dice")]["mean"]) == pytest.approx(
        statistics.mean(dice[f"multimix_cfull_s12_seed{s}"] for s in (0, 1)))
    assert {(v, c, s) for v, c, s, _ in rows} == {
        (v, c, s) for v in ("unet", "enc", "multimix") for c in ("20", "full") for s in ("6", "12")}
    assert "24 of 24 cells completed (16 runs)." in (sweep_dir / "table.md").read_text()


def run_window(submitit_dir: Path, job_id: str) -> tuple[float, float]:
    """When a local job was handed to its process and when its result was written."""
    return ((submitit_dir / f"{job_id}_submitted.pkl").stat().st_mtime,
            (submitit_dir / f"{job_id}_0_result.pkl").stat().st_mtime)


def most_at_once(windows: list[tuple[float, float]]) -> int:
    return max(sum(start <= t < end for start, end in windows) for t, _ in windows)


@pytest.mark.slow
def test_local_sweep_keeps_to_array_parallelism_and_trains_a_shared_run_once(tmp_path, capsys):
    spec_path = write_spec(tmp_path, f"""grid:
  model.variant: [unet, umtl]
  {CLS}: [20, 30]
overrides:
  trainer.max_steps: 2
  trainer.threads: 1
  trainer.image_log_every: 0
  engine.device: cpu
slurm: {{array_parallelism: 2}}
""")
    sweep_dir = tmp_path / "sweep"
    code, out, err = run_sweep(capsys, str(spec_path), "--local", "--output-dir", str(sweep_dir))
    assert code == 0, out + err
    assert "4 cells, 3 runs {'missing': 3}; submitting 3" in out
    assert "at most 2 at once" in out
    state = read_state(sweep_dir)
    assert sorted(state["runs"]) == ["umtl_c20", "umtl_c30", "unet_c20"]
    assert state["cells"]["unet_c30"] == {"values": {"model.variant": "unet", CLS: 30},
                                          "run": "unet_c20"}
    assert sorted(p.parent.name for p in sweep_dir.glob("*/summary.json")) == sorted(state["runs"])
    windows = [run_window(sweep_dir / "submitit", e["job_id"]) for e in state["runs"].values()]
    assert most_at_once(windows) == 2

    code, out, err = run_sweep(capsys, "--collect", str(sweep_dir))
    assert code == 0, err
    rows = table_rows(sweep_dir)
    assert rows[("unet", "20", "6", "dice")]["mean"] == rows[("unet", "30", "6", "dice")]["mean"]
    assert "4 of 4 cells completed (3 runs)." in out
    code, out, err = run_sweep(capsys, str(spec_path), "--dry-run", "--output-dir", str(sweep_dir))
    assert f"completed {sweep_dir / 'unet_c20'}  (also cells unet_c30)" in out
    code, out, err = run_sweep(capsys, str(spec_path), "--local", "--output-dir", str(sweep_dir))
    assert code == 0 and "4 cells, 3 runs {'completed': 3}; submitting 0" in out


@pytest.mark.parametrize("damage", ['{"cells": {', "[1, 2]", b"\xff\xfe"])
def test_a_damaged_sweep_json_is_one_line_naming_it_for_every_command(tmp_path, capsys, damage):
    state = tmp_path / "sweep.json"
    state.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    for args in ((str(PAPER_SPEC), "--dry-run", "--output-dir", str(tmp_path)),
                 (str(PAPER_SPEC), "--local", "--output-dir", str(tmp_path)),
                 ("--collect", str(tmp_path))):
        code, out, err = run_sweep(capsys, *args)
        assert code == 2, (args, err)
        assert f"{state}: not" in err and "remove it" in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err
    assert state.read_bytes() == (damage if isinstance(damage, bytes) else damage.encode())
