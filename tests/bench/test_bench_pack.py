"""``python -m mmdist.bench pack``: K step processes on one device, and figures that agree with
one another (speed is measured, never asserted)."""

from __future__ import annotations

import json
import statistics

import pytest

from mmdist.bench.__main__ import main as bench_main


@pytest.mark.slow
def test_pack_reports_per_run_and_aggregate_figures_that_agree(capsys):
    code = bench_main(["pack", "--runs", "2", "1", "--device", "cpu", "--size", "32", "--width",
                       "0.25", "--batch", "2", "--steps", "2", "--warmup", "1", "--threads", "1"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "pack" and result["device"] == "cpu" and result["size"] == 32
    by_runs = {entry["runs"]: entry for entry in result["by_runs"]}
    assert sorted(by_runs) == [1, 2]
    for k, entry in by_runs.items():
        # One figure per process, each process timed on its own.
        for key in ("step_s_per_run", "img_per_s_per_run", "peak_rss_mib_per_run"):
            assert len(entry[key]) == k, key
        assert entry["images_per_step"] == 5 * 2  # five streams of --batch images
        assert entry["threads_per_run"] == 1
        for step_s, rate in zip(entry["step_s_per_run"], entry["img_per_s_per_run"]):
            assert rate == pytest.approx(entry["images_per_step"] / step_s)
        assert entry["img_per_s_aggregate"] == pytest.approx(sum(entry["img_per_s_per_run"]))
        assert entry["step_s_median"] == pytest.approx(statistics.median(entry["step_s_per_run"]))
        # Each process holds torch and a model: hundreds of MiB, not a parent's leftover zero.
        assert all(peak > 100 for peak in entry["peak_rss_mib_per_run"])
    assert by_runs[1]["speedup_vs_1"] == 1.0
    assert by_runs[2]["speedup_vs_1"] == pytest.approx(
        by_runs[2]["img_per_s_aggregate"] / by_runs[1]["img_per_s_aggregate"])
    best = max(by_runs.values(), key=lambda e: e["img_per_s_aggregate"])["runs"]
    assert result["recommended_runs_per_gpu"] == best


def test_pack_refuses_a_repeated_or_empty_count():
    with pytest.raises(SystemExit, match="--runs: distinct counts >= 1"):
        bench_main(["pack", "--runs", "2", "2"])
    with pytest.raises(SystemExit, match="--runs: distinct counts >= 1"):
        bench_main(["pack", "--runs", "0"])
