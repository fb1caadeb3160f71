"""The distributed benchmark runs end to end and reports every ratio it promises, each
derived from its own step times as documented."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_benchmark_smoke_run():
    done = subprocess.run([sys.executable, "-m", "mmdist.bench", "ddp", "--image-size", "32",
                           "--width", "0.25", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                           "--no-deepspeed"], cwd=REPO, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "ddp" and result["images_per_rank_step"] == 10
    for key in ("scaling_efficiency", "scaling_efficiency_paired", "comm_share_exposed",
                "comm_share_allreduce",
                "saliency_overhead_ddp_detached", "saliency_overhead_ddp_differentiable",
                "saliency_overhead_single_differentiable", "images_per_s_1rank",
                "images_per_s_2ranks"):
        assert isinstance(result[key], float), key
    assert set(result["step_s"]) == {"single_none", "single_detached", "single_differentiable",
                                     "ddp_none", "ddp_detached", "ddp_differentiable",
                                     "ddp_detached_no_sync", "allreduce"}
    assert all(seconds > 0 for seconds in result["step_s"].values())
    # What the figures are: throughputs from the median step times of the same run (five
    # streams of 2 images per rank), and the ratios the docstring promises, from those times.
    step = result["step_s"]
    assert result["images_per_s_1rank"] == pytest.approx(10 / step["single_detached"])
    assert result["images_per_s_2ranks"] == pytest.approx(2 * 10 / step["ddp_detached"])
    assert result["scaling_efficiency"] == pytest.approx(
        step["single_detached"] / step["ddp_detached"])
    assert result["comm_share_exposed"] == pytest.approx(
        1 - step["ddp_detached_no_sync"] / step["ddp_detached"])
    assert result["comm_share_allreduce"] == pytest.approx(step["allreduce"] / step["ddp_detached"])
    for engine in ("single", "ddp"):
        for mode in ("detached", "differentiable"):
            assert result[f"saliency_overhead_{engine}_{mode}"] == pytest.approx(
                step[f"{engine}_{mode}"] / step[f"{engine}_none"])
    assert not any(key.startswith("saliency_overhead_deepspeed") for key in result)  # skipped
    assert 0 < result["scaling_efficiency_paired"] < 10
    assert result["params"] > 0 and result["width"] == 0.25
