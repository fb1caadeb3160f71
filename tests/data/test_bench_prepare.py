"""The prepare benchmark runs end to end on a tiny pool and reports every figure (no speed is
asserted: figures are for the closing notes)."""

import argparse

import pytest

from mmdist.bench import prepare as bench


@pytest.mark.slow
def test_prepare_benchmark_reports_all_figures(tmp_path):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--images", "12", "--distinct", "4", "--source-size", "96",
                              "--size", "32", "--workers", "1", "--read-images", "8",
                              "--read-workers", "0", "--batch", "4", "--reader-pools", "60,120",
                              "--workdir", str(tmp_path / "work")])
    report = bench.run(args)
    assert report["pool_images"] == 12 and report["prepare_rejects"] == 0
    for key in ("prepare_img_per_s", "read_cache_img_per_s", "read_png_img_per_s",
                "prepare_peak_rss_mb_tree", "nih_extrapolated_hours"):
        assert report[key] > 0, key
    assert set(report["readers"]) == {60, 120}
    for reader in report["readers"].values():
        assert reader["images_read"] > 0 and reader["anon_mb_end"] > 0
    assert not (tmp_path / "work").exists()  # generated data removed without --keep
