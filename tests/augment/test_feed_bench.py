"""bench feed prints one JSON line with the host time per step of either backend's data path
(speed is not asserted)."""

import json

import pytest

from mmdist.bench.__main__ import main

KEYS = {"benchmark", "backend", "host_ms_per_step", "batches_per_s", "wait_ms_per_step",
        "load_average_1min", "prefetch", "pinned", "host_mb_per_step", "device", "workers"}


@pytest.mark.parametrize("backend,extra", [("torch", []), ("torch", ["--prefetch", "2"]),
                                           ("dali", [])])
def test_feed_benchmark_reports_the_host_time_per_step(capsys, backend, extra):
    assert main(["feed", "--backend", backend, "--batch", "2", "--size", "32", "--steps", "3",
                 "--warmup", "1", "--threads", "1", "--images", "40", "--device", "cpu",
                 "--step-ms", "1"] + extra) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert KEYS <= set(result) and result["benchmark"] == "feed"
    assert result["host_ms_per_step"] > 0 and result["batches_per_s"] > 0
    assert result["wait_ms_per_step"] <= result["host_ms_per_step"]
    assert result["pinned"] is False  # a CPU device: pinning would only cost a copy
    # Five streams and the masks: 2 uint8 images of 32 px each; two int64 targets.
    assert result["host_mb_per_step"] * 2**20 == 6 * 2 * 32 * 32 + 2 * 8
    # On a CPU device the default is inline (0); --prefetch 2 runs the thread.
    assert result["prefetch"] == (None if backend == "dali" else 2 if extra else 0)
