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
    # What the figures are: the prepare run's rate over the whole pool, and the NIH projection
    # from it (112,120 images; a 32 px cache of them in bytes).
    rate = report["prepare_img_per_s"]
    assert rate == pytest.approx(12 / report["prepare_s"], rel=0.05)  # both rounded
    assert report["nih_extrapolated_hours"] == pytest.approx(112_120 / rate / 3600, rel=0.01)
    assert report["nih_cache_gb"] == pytest.approx(112_120 * 32 * 32 / 1e9, abs=0.01)
    assert report["read_cache_over_png"] == pytest.approx(
        report["read_cache_img_per_s"] / report["read_png_img_per_s"], abs=0.06)
    assert report["read_images"] == 8
    # The tree's peak holds at least the CLI's interpreter with numpy and PIL loaded.
    assert report["prepare_peak_rss_mb_tree"] > 30
    for pool, reader in report["readers"].items():
        # Rank 0 of 2 reads its shard of the split's pool in whole batches of 10.
        assert reader["pool"] == pool and reader["images_read"] % 10 == 0
        assert 0 < reader["images_read"] <= pool // 2
