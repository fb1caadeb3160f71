"""The augment benchmark runs both backends and reports what it measured (speed is not asserted):
views per step of the variant's streams, over the timed steps only."""

import argparse
import time

import pytest

from mmdist.bench import augment
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS


def test_augment_benchmark_reports_both_backends_side_by_side():
    parser = argparse.ArgumentParser()
    augment.add_arguments(parser)
    args = parser.parse_args(["--backend", "both", "--size", "32", "--batch", "2", "--steps", "2",
                              "--warmup", "1", "--repeats", "1", "--threads", "1", "--images", "40"])
    result = augment.run(args)
    assert result["views_per_step"] == 5 * 2  # the five streams of a MultiMix step
    assert result["torch_img_per_s"] > 0 and result["dali_img_per_s"] > 0
    assert result["dali_over_torch"] == result["dali_img_per_s"] / result["torch_img_per_s"]


@pytest.mark.parametrize("variant, streams", [("unet", 1), ("enc_mm", 3), ("umtl_s", 2)])
def test_augment_benchmark_counts_the_variants_views_over_the_timed_steps(variant, streams):
    """A step's views are the variant's streams times the batch; the timer leaves out the
    pipeline's set-up and the warm-up batches, so it is shorter than the call around it."""
    parser = argparse.ArgumentParser()
    augment.add_arguments(parser)
    args = parser.parse_args(["--backend", "torch", "--size", "32", "--batch", "3", "--steps", "2",
                              "--warmup", "1", "--threads", "1", "--images", "40",
                              "--variant", variant])
    config = augment._config(args, "torch")
    spec = VARIANTS[variant]
    assert len(spec.streams) == streams
    task_data = build_task_data(config, spec.tasks)
    tick = time.perf_counter()
    seconds, views = augment.time_backend(config, task_data, spec.streams, steps=2, warmup=1)
    wall = time.perf_counter() - tick
    assert views == streams * 3
    assert 0 < seconds < wall
    result = augment.run(args)
    assert result["views_per_step"] == streams * 3 and result["backend"] == "torch"
