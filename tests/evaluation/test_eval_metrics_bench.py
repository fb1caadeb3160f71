"""The eval benchmark times both definitions of the segmentation metrics and reports that they
agree (speed is not asserted)."""

import argparse
import json

import numpy as np
from PIL import Image

from mmdist.bench import eval as eval_bench
from mmdist.bench.__main__ import main
from mmdist.evaluation.metrics import SEGMENTATION_METRICS


def test_eval_benchmark_reports_both_definitions_side_by_side(tmp_path, capsys):
    # An empty --masks folder: random masks only, independent of the shared data.
    main(["eval", "--size", "48", "--images", "6", "--repeats", "1", "--masks", str(tmp_path)])
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "eval" and result["images"] == 6 and result["real_masks"] == 0
    for metric in ("hausdorff", "ssim", "total"):
        assert result[f"ms_per_image_{metric}"] > 0
        assert result[f"ms_per_image_{metric}_reference"] > 0
    assert result["speedup_total"] == (result["ms_per_image_total_reference"]
                                       / result["ms_per_image_total"])
    assert isinstance(result["load_average_1min"], float)
    for name in SEGMENTATION_METRICS:
        assert result[f"max_abs_difference_{name}"] <= 1e-6


def test_eval_benchmark_scores_the_masks_of_a_labels_csv_folder(tmp_path):
    (tmp_path / "masks").mkdir()
    for i in range(2):
        mask = np.zeros((60, 50), dtype=np.uint8)
        mask[10 + i:40, 5:20 + i] = mask[12:45, 28:44] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"m{i}.png")
    (tmp_path / "labels.csv").write_text("image,mask\nimages/a.png,masks/m0.png\n"
                                         "images/b.png,masks/m1.png\n")
    assert eval_bench.load_masks(tmp_path, 32).shape == (2, 32, 32)
    parser = argparse.ArgumentParser()
    eval_bench.add_arguments(parser)
    result = eval_bench.run(parser.parse_args(["--size", "32", "--images", "6", "--repeats", "1",
                                               "--masks", str(tmp_path)]))
    assert result["real_masks"] == 3  # half of the images, cycling the two masks
    assert max(result[f"max_abs_difference_{n}"] for n in SEGMENTATION_METRICS) <= 1e-6
