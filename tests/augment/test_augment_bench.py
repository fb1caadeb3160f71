"""The augment benchmark runs both backends and reports what it measured (speed is not asserted)."""

import argparse

from mmdist.bench import augment


def test_augment_benchmark_reports_both_backends_side_by_side():
    parser = argparse.ArgumentParser()
    augment.add_arguments(parser)
    args = parser.parse_args(["--backend", "both", "--size", "32", "--batch", "2", "--steps", "2",
                              "--warmup", "1", "--repeats", "1", "--threads", "1", "--images", "40"])
    result = augment.run(args)
    assert result["views_per_step"] == 5 * 2  # the five streams of a MultiMix step
    assert result["torch_img_per_s"] > 0 and result["dali_img_per_s"] > 0
    assert result["dali_over_torch"] == result["dali_img_per_s"] / result["torch_img_per_s"]
