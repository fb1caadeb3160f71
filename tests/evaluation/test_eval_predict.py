"""python -m mmdist.predict on a PNG, a JPEG and a small DICOM written here, and on folders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.segmentation import find_boundaries

from mmdist.config import load_config
from mmdist.data.imaging import resize_gray
from mmdist.data.step_batch import to_model_input
from mmdist.engine.checkpoint import save_checkpoint
from mmdist.evaluation.evaluate import load_model
from mmdist.evaluation.plots import PREDICTION_COLOUR, save_figure, saliency_overlay_figure
from mmdist.evaluation.predict import load_network, predict_gray
from mmdist.evaluation.predict import main as predict_main
from mmdist.model import build_model

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(root: Path, variant: str = "multimix", ema: bool = False) -> Path:
    """A checkpoint of a freshly initialised network; with ``ema``, its 'ema' entry holds the
    weights of a second network drawn from another seed, so the two give different outputs."""
    config = load_config(REPO / "configs" / "tiny.yaml", [f"model.variant={variant}", "model.width=0.125"])
    torch.manual_seed(0)
    state = {"model": build_model(config.model).state_dict(), "config": config.to_dict()}
    if ema:
        torch.manual_seed(1)
        state["ema"] = {"decay": 0.999, "updates": 3, "model": build_model(config.model).state_dict()}
    return save_checkpoint(root / f"{variant}{'_ema' if ema else ''}", 3, state)


def _chest(height, width, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    body = ((x - width / 2) / (0.45 * width)) ** 2 + ((y - height / 2) / (0.48 * height)) ** 2 < 1
    return np.clip(body * 170 + rng.normal(0, 20, (height, width)), 0, 255).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.dataset import FileDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    png, jpeg, dcm = root / "chest.png", root / "chest.jpg", root / "chest.dcm"
    Image.fromarray(_chest(72, 80, 1)).save(png)
    Image.fromarray(_chest(100, 100, 2)).convert("RGB").save(jpeg, quality=90)
    _write_dicom(dcm, _chest(40, 48, 3).astype(np.uint16) * 16)  # 12-bit values
    return {"png": png, "jpeg": jpeg, "dicom": dcm, "sizes": {"png": (80, 72), "jpeg": (100, 100),
                                                             "dicom": (48, 40)}}


def test_png_jpeg_and_dicom_from_the_command_line(tmp_path, inputs):
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "mmdist.predict", str(checkpoint), str(inputs["png"]),
         str(inputs["jpeg"]), str(inputs["dicom"]), "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines] == ["chest.png", "chest.jpg", "chest.dcm"]
    model, config, _ = load_model(checkpoint)
    for line, kind in zip(lines, ("png", "jpeg", "dicom")):
        probs = line["probabilities"]
        assert probs["normal"] + probs["pneumonia"] == pytest.approx(1.0, abs=1e-6)
        assert line["predicted"] == max(probs, key=probs.get)
        for key in ("mask", "overlay"):
            with Image.open(line[key]) as image:
                assert image.size == inputs["sizes"][kind], (kind, key)
                assert image.mode == ("L" if key == "mask" else "RGB")
        assert Path(line["saliency"]).is_file()
        mask = np.asarray(Image.open(line["mask"]))
        assert set(np.unique(mask)) <= {0, 255}
        assert line["lung_fraction"] == pytest.approx((mask > 0).mean())
    # The PNG's probabilities again, straight from the network on the resized image.
    gray = np.asarray(Image.open(inputs["png"]))
    x = to_model_input(torch.from_numpy(np.array(resize_gray(gray, config.data.image_size)))[None, None])
    with torch.no_grad():
        direct = torch.softmax(model(cls_images=x).cls_logits, 1)[0]
    assert lines[0]["probabilities"]["pneumonia"] == pytest.approx(float(direct[1]), abs=1e-5)


def test_variants_without_a_head_and_unreadable_files(tmp_path, inputs, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    unet = _checkpoint(tmp_path, "unet")
    rc = predict_main([str(unet), str(broken), str(inputs["png"]), "--out", str(tmp_path / "u"),
                       "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and str(broken) in captured.err
    (line,) = [json.loads(x) for x in captured.out.splitlines()]
    assert "mask" in line and "probabilities" not in line and "saliency" not in line
    enc = _checkpoint(tmp_path, "enc")
    assert predict_main([str(enc), str(inputs["dicom"]), "--out", str(tmp_path / "e"),
                         "--device", "cpu"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "probabilities" in line and "saliency" in line and "mask" not in line
    assert predict_main([str(tmp_path / "missing.pt"), str(inputs["png"])]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_ema_weights_by_default_and_raw_on_request(tmp_path, inputs, capsys):
    checkpoint = _checkpoint(tmp_path, ema=True)
    runs = {}
    for weights in ("auto", "ema", "raw"):
        assert predict_main([str(checkpoint), str(inputs["png"]), "--out", str(tmp_path / weights),
                             "--device", "cpu", "--weights", weights]) == 0
        (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        runs[weights] = line["probabilities"]["pneumonia"]
    gray = np.asarray(Image.open(inputs["png"]))
    x = to_model_input(torch.from_numpy(np.array(resize_gray(gray, 64)))[None, None])
    direct = {}
    for weights in ("ema", "raw"):
        model, _, state = load_model(checkpoint, weights=weights)
        assert state["weights_used"] == weights
        with torch.no_grad():
            direct[weights] = float(torch.softmax(model(cls_images=x).cls_logits, 1)[0, 1])
    assert direct["ema"] != pytest.approx(direct["raw"], abs=1e-4)  # the two weights differ
    assert runs["auto"] == runs["ema"] == pytest.approx(direct["ema"], abs=1e-5)
    assert runs["raw"] == pytest.approx(direct["raw"], abs=1e-5)
    # A checkpoint without the average: 'auto' falls back to the raw weights, 'ema' is refused.
    plain = _checkpoint(tmp_path)
    assert predict_main([str(plain), str(inputs["png"]), "--out", str(tmp_path / "p"),
                         "--device", "cpu", "--weights", "ema"]) == 2
    assert "no EMA weights" in capsys.readouterr().err
    assert load_model(plain)[2]["weights_used"] == "raw"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three PNG chests of different sizes (written out of name order) and a text file."""
    root = tmp_path_factory.mktemp("folder")
    for name, (h, w), seed in (("c.png", (60, 52), 4), ("a.png", (72, 80), 5), ("b.png", (48, 64), 6)):
        Image.fromarray(_chest(h, w, seed)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def _lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_a_folder_predicts_its_images_as_listing_them_does(tmp_path, folder, capsys):
    checkpoint, out = str(_checkpoint(tmp_path)), str(tmp_path / "out")
    assert predict_main([checkpoint, str(folder), "--out", out, "--device", "cpu"]) == 0
    from_folder = _lines(capsys)
    files = [str(folder / name) for name in ("a.png", "b.png", "c.png")]
    assert predict_main([checkpoint, *files, "--out", out, "--device", "cpu"]) == 0
    assert from_folder == _lines(capsys)
    assert [line["image"] for line in from_folder] == files  # sorted; the .txt left out


def test_an_empty_folder_is_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert predict_main([str(tmp_path / "never_loaded.pt"), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(empty) in err and "no images" in err


def test_help_shows_the_default_folder_and_the_saliency_scale(capsys):
    with pytest.raises(SystemExit):
        predict_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: predictions, in the working directory)" in text
    assert "--saliency-scale {per-image,shared}" in text and "largest maximum" in text


def test_overlay_outlines_the_predicted_mask_on_the_xray(tmp_path, inputs, capsys):
    assert predict_main([str(_checkpoint(tmp_path)), str(inputs["png"]), "--out",
                         str(tmp_path / "o"), "--device", "cpu"]) == 0
    (line,) = _lines(capsys)
    gray = np.asarray(Image.open(inputs["png"]))
    mask = np.asarray(Image.open(line["mask"])) > 0
    overlay = np.asarray(Image.open(line["overlay"]))
    assert overlay.shape == gray.shape + (3,)
    # The mask's inner boundary, the image border counting as background.
    edges = find_boundaries(np.pad(mask, 1), mode="inner")[1:-1, 1:-1]
    assert 0 < edges.sum() < edges.size / 4
    assert (overlay[edges] == PREDICTION_COLOUR).all()
    assert (overlay[~edges] == gray[~edges][:, None]).all()


def test_shared_saliency_scale_is_one_colour_scale_for_the_call(tmp_path, folder, capsys):
    checkpoint = _checkpoint(tmp_path)
    files = sorted(folder.glob("*.png"))
    network, size = load_network(checkpoint, torch.device("cpu"))
    maps = [predict_gray(network, np.asarray(Image.open(f)), size).saliency for f in files]
    tops = [float(m.max()) for m in maps]
    assert max(tops) > 1.05 * min(tops)  # the images' own scales differ
    runs = {}
    for scale in ("per-image", "shared"):
        assert predict_main([str(checkpoint), str(folder), "--out", str(tmp_path / scale),
                             "--device", "cpu", "--saliency-scale", scale]) == 0
        runs[scale] = _lines(capsys)
    assert [line["saliency_vmax"] for line in runs["per-image"]] == pytest.approx(tops, rel=1e-5)
    assert [line["saliency_vmax"] for line in runs["shared"]] == pytest.approx([max(tops)] * 3,
                                                                               rel=1e-5)
    # The PNG is the overlay figure drawn with the shared top, not with the image's own.
    low = int(np.argmin(tops))
    gray = np.asarray(Image.open(files[low]))
    written = np.asarray(Image.open(runs["shared"][low]["saliency"]))
    drawn = {}
    for name, vmax in (("shared", max(tops)), ("own", tops[low])):
        path = save_figure(saliency_overlay_figure(gray, maps[low], vmax=vmax,
                                                   title=files[low].name), tmp_path / f"{name}.png")
        drawn[name] = np.asarray(Image.open(path))
    assert written.shape == drawn["shared"].shape
    assert np.abs(written.astype(int) - drawn["shared"].astype(int)).max() <= 2
    assert np.abs(written.astype(int) - drawn["own"].astype(int)).max() > 20


def test_an_exported_file_gives_the_checkpoints_overlays_and_shared_scale(tmp_path, folder, capsys):
    from mmdist.export.__main__ import main as export_main

    checkpoint = _checkpoint(tmp_path)
    exported = tmp_path / "model.torchscript.pt"
    assert export_main([str(checkpoint), "--format", "torchscript", "--out", str(exported)]) == 0
    capsys.readouterr()
    runs = {}
    for name, source in (("checkpoint", checkpoint), ("exported", exported)):
        assert predict_main([str(source), str(folder), "--out", str(tmp_path / name), "--device",
                             "cpu", "--saliency-scale", "shared"]) == 0
        runs[name] = _lines(capsys)
    for ours, theirs in zip(runs["checkpoint"], runs["exported"]):
        assert theirs["image"] == ours["image"]
        assert theirs["probabilities"]["pneumonia"] == pytest.approx(
            ours["probabilities"]["pneumonia"], abs=1e-5)
        assert theirs["saliency_vmax"] == pytest.approx(ours["saliency_vmax"], rel=1e-4)
        overlays = [np.asarray(Image.open(line["overlay"])) for line in (ours, theirs)]
        assert (overlays[0] == overlays[1]).all()
    assert len({line["saliency_vmax"] for line in runs["exported"]}) == 1
