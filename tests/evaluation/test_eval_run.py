"""python -m mmdist.evaluate on a trained tiny run: built-in data always, Shenzhen when present,
2 ranks under torchrun equal to one process."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from mmdist.config import load_config
from mmdist.data.row_reads import gather_rows
from mmdist.data.step_batch import to_model_input
from mmdist.data.task_data import build_task_data
from mmdist.evaluate import main as evaluate_main
from mmdist.evaluation.evaluate import evaluate_run, load_model
from mmdist.evaluation.metrics import CLASSIFICATION_METRICS, SEGMENTATION_METRICS
from mmdist.evaluation.surface import SURFACE_METRICS

SEG_METRICS = SEGMENTATION_METRICS + SURFACE_METRICS + ("surface_images",)
IN_CLS, IN_SEG = "synthetic-classification", "synthetic-segmentation"
"""The in-domain test sets, named by their dataset."""
COUNTS = ("tn", "fp", "fn", "tp", "surface_images")

REPO = Path(__file__).resolve().parents[2]
SHENZHEN = Path(os.environ.get("MMDIST_SHARED_DATA", REPO / ".." / "shared" / "data")) / "shenzhen-lungseg"
SYNTHETIC_CROSS = ("evaluation.cross_domain=[{name: other_scanner, task: segmentation, count: 11, "
                   "domain: {gamma: 1.6, noise: 0.08}}, {name: other_ward, task: classification, "
                   "count: 13, domain: {contrast: 0.7}}]")
# With the weight average and a validation after every step, so the run keeps a best.pt.
TINY = ["model.width=0.125", "data.classification.count=60", "data.segmentation.count=30",
        "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.image_log_every=0",
        "trainer.val_every=1", "model.ema_decay=0.9"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mmdist.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("run")
    config = load_config(REPO / "configs" / "tiny.yaml", TINY + [f"output_dir={out}", SYNTHETIC_CROSS])
    Trainer(config).fit()
    return out


def _read_csv(path):
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def test_builtin_data_in_and_cross_domain(run_dir):
    summary = evaluate_run(run_dir)
    written = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(summary))
    sets = written["test_sets"]
    assert sorted(sets) == ["other_scanner", "other_ward", IN_CLS, IN_SEG]
    assert sets["other_scanner"]["domain"] == "cross" and sets["other_scanner"]["n_images"] == 11
    assert sets["other_ward"]["n_images"] == 13
    for name, entry in sets.items():
        expected = CLASSIFICATION_METRICS if entry["kind"] == "classification" else SEG_METRICS
        assert sorted(entry["metrics"]) == sorted(expected), name
        for metric, value in entry["metrics"].items():
            if metric not in ("hausdorff",) + SURFACE_METRICS + COUNTS and value is not None:
                assert 0.0 <= value <= 1.0, (name, metric)
        # Held-out sets: none of their images or patients trained.
        assert entry["overlap"] == {"shared_images": 0, "shared_patients": 0, "examples": []}
    cls = sets[IN_CLS]["metrics"]
    assert cls["tn"] + cls["fp"] + cls["fn"] + cls["tp"] == sets[IN_CLS]["n_images"]

    # The in-domain segmentation numbers again, independently: the model on the whole test split
    # in one batch, Dice from the masks.
    config = load_config(run_dir / "config.yaml")
    model, _, _ = load_model(summary["checkpoint"])
    task = build_task_data(config).segmentation
    assert task.imageset.source == IN_SEG
    test = task.split.test
    with torch.no_grad():
        logits = model(seg_images=to_model_input(gather_rows(task.imageset.images, test, 64, False))).seg_logits
    pred = (logits[:, 0] > 0).numpy()
    true = gather_rows(task.imageset.masks, test, 64, True)[:, 0].numpy() > 0
    dice = 2 * (pred & true).sum((1, 2)) / (pred.sum((1, 2)) + true.sum((1, 2)))
    rows = _read_csv(run_dir / "eval" / "per_image" / f"{IN_SEG}.csv")
    assert [int(r["index"]) for r in rows] == test.tolist()
    assert np.allclose([float(r["dice"]) for r in rows], dice)
    assert sets[IN_SEG]["metrics"]["dice"] == pytest.approx(dice.mean())

    row = (run_dir / "eval" / "table_row.md").read_text().splitlines()
    assert row[0].startswith("| model | D_l^c | D_l^s | Acc |") and row[2].startswith("| multimix | 20 | 6 |")
    assert f"({sets['other_scanner']['metrics']['dice']:.3f})" in row[2]

    pngs = {p.name: p for p in (run_dir / "eval").glob("*.png")}
    assert set(pngs) == {"roc.png", "dice_boxplot.png", "hd95_boxplot.png", "assd_boxplot.png",
                         f"bland_altman_{IN_SEG}.png", "bland_altman_other_scanner.png",
                         f"overlay_{IN_SEG}.png", "overlay_other_scanner.png",
                         f"saliency_{IN_CLS}.png", "saliency_other_ward.png"}
    with Image.open(pngs[f"overlay_{IN_SEG}.png"]) as overlay:
        # Worst, median and best, each 64 px image zoomed 3x (nearest) to fit its title; bands
        # of 30 px (two title lines) above and 20 px (legend) below.
        assert overlay.size == (3 * 3 * 64, 3 * 64 + 50)
    with Image.open(pngs["roc.png"]) as roc:
        assert roc.size == (500, 500)
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={IMAGES: 0})
    events.Reload()
    tags = [t for t in events.Tags()["images"] if t.startswith("eval/")]
    assert len(tags) == len(pngs)
    (event,) = events.Images("eval/overlay/other_scanner")
    assert (event.width, event.height, event.step) == (3 * 3 * 64, 3 * 64 + 50, summary["step"])
    assert set(written["outputs"]) == {"metrics.json", "table_row.md", "per_image"} | set(pngs)


def test_the_best_checkpoint_and_its_ema_weights_by_default(run_dir, capsys):
    """best.pt (and its EMA weights) unless --checkpoint / --weights say otherwise; metrics.json
    names the file, its step, the weights and the selection that chose it."""
    trained = json.loads((run_dir / "summary.json").read_text())
    assert evaluate_main([str(run_dir), "--no-plots"]) == 0, capsys.readouterr().err
    chosen = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert chosen["checkpoint"] == str(run_dir / "checkpoints" / "best.pt")
    assert (chosen["step"], chosen["weights"]) == (trained["best_step"], "ema")
    assert chosen["selection"] == {"metric": "val_mean", "weights": "ema",
                                   "value": pytest.approx(trained["best_value"])}
    # The EMA weights are what was scored: they are not the raw ones, and the model loaded from
    # best.pt by default carries them.
    model, _, state = load_model(run_dir / "checkpoints" / "best.pt")
    assert state["weights_used"] == "ema"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["ema"]["model"][name]), name
    assert any(not torch.equal(state["ema"]["model"][k], state["model"][k]) for k in state["model"])

    step_2 = run_dir / "checkpoints" / "step_00000002.pt"
    assert evaluate_main([str(run_dir), "--no-plots", "--checkpoint", str(step_2),
                          "--weights", "raw"]) == 0, capsys.readouterr().err
    raw = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert (raw["checkpoint"], raw["step"], raw["weights"]) == (str(step_2), 2, "raw")
    assert raw["selection"] == (chosen["selection"] if trained["best_step"] == 2 else None)


def _evaluate_cli(args, env_extra=None, launcher=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *launcher, "-m", "mmdist.evaluate", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process(run_dir, tmp_path):
    one = _evaluate_cli([str(run_dir), "--no-plots"])
    assert one.returncode == 0, one.stderr
    single = json.loads((run_dir / "eval" / "metrics.json").read_text())
    two = _evaluate_cli([str(run_dir), "--no-plots"], launcher=(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    double = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert double["ranks"] == 2 and single["ranks"] == 1
    # 11 and 13 cross-domain images: shards of 6 + 5 and 7 + 6
    for name, entry in single["test_sets"].items():
        assert double["test_sets"][name]["n_images"] == entry["n_images"]
        for metric, value in entry["metrics"].items():
            assert double["test_sets"][name]["metrics"][metric] == pytest.approx(value, rel=1e-9), (name, metric)


def test_shenzhen_cross_domain_row(run_dir, monkeypatch, capsys):
    if not (SHENZHEN / "labels.csv").is_file():
        pytest.skip(f"shared Shenzhen data not found at {SHENZHEN}")
    cross = f"evaluation.cross_domain=[{{name: shenzhen, task: segmentation, kind: csv, path: '{SHENZHEN}'}}]"
    # HOME: the prepared 64 px cache of the raw folder goes under the test's own folder.
    monkeypatch.setenv("HOME", str(run_dir.parent / "home"))
    assert evaluate_main([str(run_dir), "--no-plots", cross]) == 0, capsys.readouterr().err
    sets = json.loads((run_dir / "eval" / "metrics.json").read_text())["test_sets"]
    shenzhen = sets["shenzhen"]
    assert (shenzhen["domain"], shenzhen["kind"], shenzhen["n_images"]) == ("cross", "segmentation", 59)
    assert sorted(shenzhen["metrics"]) == sorted(SEG_METRICS)
    assert 0.0 < shenzhen["metrics"]["dice"] <= 1.0 and shenzhen["metrics"]["hausdorff"] >= 0
    row = (run_dir / "eval" / "table_row.md").read_text().splitlines()[2]
    assert f"({shenzhen['metrics']['dice']:.3f})" in row


def test_clear_errors(tmp_path, run_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        evaluate_run(empty)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert evaluate_main([str(run_dir), "--checkpoint", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert evaluate_main([str(run_dir), "evaluation.cross_domain=[{name: x, kind: csv}]"]) == 2
    assert "evaluation.cross_domain[0].path" in capsys.readouterr().err


def test_out_folder_and_a_rerun_replaces_its_own_outputs(run_dir, tmp_path, capsys):
    """--out DIR takes every output; a second evaluation into it with other test sets leaves no
    figure or per-image file of the first, and leaves files it did not write alone."""
    out = tmp_path / "eval_out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "mine.png").write_bytes(b"not written by evaluate")
    assert evaluate_main([str(run_dir), "--out", str(out), SYNTHETIC_CROSS]) == 0, \
        capsys.readouterr().err
    assert (out / "overlay_other_scanner.png").is_file()
    assert (out / "per_image" / "other_ward.csv").is_file()
    assert f"wrote {out}/metrics.json" in capsys.readouterr().out
    assert evaluate_main([str(run_dir), "--out", str(out), "--no-plots",
                          "evaluation.cross_domain=[]"]) == 0, capsys.readouterr().err
    left = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert left == {"notes.txt", "mine.png", "metrics.json", "table_row.md", f"per_image/{IN_CLS}.csv",
                    f"per_image/{IN_SEG}.csv"}
    assert sorted(json.loads((out / "metrics.json").read_text())["test_sets"]) == [IN_CLS, IN_SEG]


def _write_png_dataset(folder, imageset, indices):
    """The given images and masks of a set as PNGs with a labels.csv (the csv kind)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    lines = ["image,mask,patient"]
    for i in indices:
        Image.fromarray(np.asarray(imageset.images[i])).save(folder / "images" / f"copy{i}.png")
        Image.fromarray(np.asarray(imageset.masks[i]) * 255).save(folder / "masks" / f"copy{i}.png")
        lines.append(f"images/copy{i}.png,masks/copy{i}.png,x{i}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def test_a_cross_domain_set_holding_training_images_is_flagged(run_dir, tmp_path, monkeypatch,
                                                               capsys):
    """Five training images and five test images of the run, saved as another folder and named
    as a cross-domain set: the five training ones are counted (by content, under other names),
    named on stderr and in metrics.json; the in-domain sets stay clean."""
    monkeypatch.setenv("MMDIST_CACHE", str(tmp_path / "cache"))
    config = load_config(run_dir / "config.yaml")
    task = build_task_data(config).segmentation
    _write_png_dataset(tmp_path / "copied", task.imageset,
                       list(task.split.train[:5]) + list(task.split.test[:5]))
    cross = ("evaluation.cross_domain=[{name: copied, task: segmentation, kind: csv, "
             f"path: '{tmp_path / 'copied'}'}}]")
    assert evaluate_main([str(run_dir), "--no-plots", "--out", str(tmp_path / "e"), cross]) == 0
    err = capsys.readouterr().err
    assert "evaluate: warning: test set 'copied' shares 5 image(s) and 0 patient(s) with this " \
           "run's training data (e.g. images/copy" in err
    written = json.loads((tmp_path / "e" / "metrics.json").read_text())
    overlap = written["test_sets"]["copied"]["overlap"]
    assert overlap["shared_images"] == 5
    assert sorted(overlap["examples"]) == sorted(f"images/copy{i}.png" for i in task.split.train[:5])
    assert written["test_sets"][IN_SEG]["overlap"]["shared_images"] == 0
    assert any("'copied' shares 5 image(s)" in line for line in written["warnings"])


def test_an_older_evaluation_without_a_list_is_cleared_by_its_known_names(tmp_path):
    from mmdist.evaluation.evaluate import clear_previous_outputs

    (tmp_path / "per_image").mkdir()
    (tmp_path / "per_image" / "segmentation.csv").write_text("index,dice\n")
    for name in ("roc.png", "overlay_segmentation.png", "table_row.md", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "metrics.json").write_text(json.dumps({"test_sets": {}}))
    clear_previous_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    # a folder that holds no evaluation is left as it is
    (tmp_path / "mine.png").write_text("x")
    clear_previous_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.png", "notes.txt"]
