"""Sweeps on the test cluster: a 4-run job array with the results table, TensorBoard hparams per
run, and a re-run that submits only what is missing. The spec's expansion and its errors:
test_sweep_spec.py; --dry-run, --collect and --local's cap: test_sweep_runs.py."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from slurm_cluster import REPO, job_state, wait_until
from tensorboard_events import hparams_of, read_events

from mmdist.sweep import main as sweep_main

TINY_SPEC = REPO / "configs" / "sweeps" / "tiny.yaml"


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"config: {REPO / 'configs' / 'tiny.yaml'}\n" + text)
    return path


def run_sweep(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m mmdist.sweep ARGS`` in this process (the jobs themselves run on the cluster)."""
    capsys.readouterr()
    code = sweep_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


@pytest.mark.slurm
@pytest.mark.slow
def test_sweep_array_table_tensorboard_and_rerun(slurm, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep_dir = tmp_path / "sweep"
    code, out, err = run_sweep(capsys, str(TINY_SPEC), "--output-dir", str(sweep_dir), "--wait",
                               "--wait-timeout", "480")
    assert code == 0, out + err
    assert "4 cells, 4 runs {'missing': 4}; submitting 4" in out

    # One job array of four tasks, at most two at once.
    state = json.loads((sweep_dir / "sweep.json").read_text())
    job_ids = [entry["job_id"] for entry in state["runs"].values()]
    arrays = {job_id.split("_")[0] for job_id in job_ids}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in job_ids) == ["0", "1", "2", "3"]
    script = (sweep_dir / "submitit" / f"{arrays.pop()}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script

    results = summaries(sweep_dir)
    assert sorted(results) == ["multimix_seed0", "multimix_seed1", "umtl_seed0", "umtl_seed1"]
    assert all(r["status"] == "completed" and r["steps"] == 8 for r in results.values())

    # Each run is its own TensorBoard run with the same hparams names, its own values.
    hparams = {name: hparams_of(read_events(sweep_dir / name / "tb")) for name in results}
    assert len({tuple(sorted(h)) for h in hparams.values()}) == 1
    assert {(h["variant"], h["seed"]) for h in hparams.values()} == {
        ("multimix", 0.0), ("multimix", 1.0), ("umtl", 0.0), ("umtl", 1.0)}

    # Each cell was evaluated on its test sets after training (the spec says evaluate: metrics),
    # and the table holds the mean over the two seeds of each model (no spread under 3 seeds).
    metrics = {name: json.loads((sweep_dir / name / "eval" / "metrics.json").read_text())
               for name in results}
    code, out, err = run_sweep(capsys, "--collect", str(sweep_dir))
    assert code == 0, err
    rows = list(csv.DictReader((sweep_dir / "table.csv").open()))
    for test_set, metric in (("synthetic-segmentation", "dice"),
                             ("synthetic-classification", "acc")):
        cells = {row["variant"]: row for row in rows
                 if row["metric"] == metric and row["test_set"] == test_set}
        assert sorted(cells) == ["multimix", "umtl"]
        for variant, row in cells.items():
            values = [metrics[f"{variant}_seed{s}"]["test_sets"][test_set]["metrics"][metric]
                      for s in (0, 1)]
            assert int(row["n"]) == 2
            assert float(row["mean"]) == pytest.approx(statistics.mean(values))
            assert row["std"] == ""  # two seeds: no spread reported (tables.MIN_SEEDS)
    markdown = (sweep_dir / "table.md").read_text()
    assert "| multimix | 20 | 6 | 2 |" in markdown
    assert "4 of 4 cells completed (4 runs)" in markdown

    # Same spec again: nothing to do.
    code, out, err = run_sweep(capsys, str(TINY_SPEC), "--output-dir", str(sweep_dir))
    assert code == 0, err
    assert "4 cells, 4 runs {'completed': 4}; submitting 0" in out
    assert json.loads((sweep_dir / "sweep.json").read_text())["runs"] == state["runs"]

    # A cell whose run is lost (no completed summary) is resubmitted alone and resumes from its
    # last checkpoint instead of training again. (Wait for the array to leave the queue first: a
    # task still listed there, e.g. COMPLETING, counts as queued and is rightly not resubmitted.)
    wait_until(lambda: not any(map(job_state, job_ids)), 60, "the array to leave the queue")
    (sweep_dir / "umtl_seed1" / "summary.json").unlink()
    code, out, err = run_sweep(capsys, str(TINY_SPEC), "--output-dir", str(sweep_dir), "--wait",
                               "--wait-timeout", "300")
    assert code == 0, out + err
    assert "'completed': 3, 'failed': 1}; submitting 1" in out
    again = json.loads((sweep_dir / "umtl_seed1" / "summary.json").read_text())
    assert again["status"] == "completed" and again["start_step"] == 8 and again["steps"] == 8
    assert (sweep_dir / "umtl_seed1" / "eval" / "metrics.json").is_file()
