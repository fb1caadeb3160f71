"""python -m mmdist.export: TorchScript and ONNX files equal the eager model on real X-rays, for
each kind of variant (bridged, unbridged with a classifier, segmentation-only, classifier-only),
and mmdist.predict reads them (and run directories)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdist.config import load_config
from mmdist.data.imaging import decode_gray, resize_gray
from mmdist.engine.checkpoint import atomic_torch_save, best_checkpoint_path, save_checkpoint
from mmdist.evaluation.predict import main as predict_main
from mmdist.evaluation.trained_model import load_model
from mmdist.export import onnx_export
from mmdist.export.__main__ import main as export_main
from mmdist.export.graph import eager_outputs
from mmdist.model import build_model

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MMDIST_SHARED_DATA", REPO.parent / "shared" / "data"))
SIZE = 64  # configs/tiny.yaml's data.image_size
TOLERANCE = 1e-4
KINDS = {  # variant -> the outputs its export must have
    "multimix": ("mask", "probabilities", "saliency"),  # decoder reads the saliency
    "umtl": ("mask", "probabilities", "saliency"),  # classifier and decoder, no bridge
    "unet": ("mask",),
    "enc": ("probabilities", "saliency"),
}


def _checkpoint(root: Path, variant: str, seed: int = 0, ema: bool = True) -> Path:
    """A freshly initialised tiny network's checkpoint; its 'ema' entry (the weights evaluate
    and export pick) is a second network drawn from another seed, so raw and EMA differ."""
    config = load_config(REPO / "configs" / "tiny.yaml", [f"model.variant={variant}",
                                                          "model.width=0.125"])
    torch.manual_seed(seed)
    state = {"model": build_model(config.model).state_dict(), "config": config.to_dict()}
    if ema:
        torch.manual_seed(seed + 100)
        state["ema"] = {"decay": 0.99, "updates": 3, "model": build_model(config.model).state_dict()}
    return save_checkpoint(root / variant, 3, state)


@pytest.fixture(scope="module")
def real_images():
    """uint8 (5, 1, 64, 64): three Kermany radiographs and two Montgomery ones."""
    files = sorted((SHARED / "kermany-pneumonia-224" / "images").glob("*.jpeg"))[:3]
    files += sorted((SHARED / "montgomery-lungseg" / "images").glob("*.png"))[:2]
    if len(files) < 5:
        pytest.skip(f"needs the shared X-rays in {SHARED} (set MMDIST_SHARED_DATA)")
    grays = [np.array(resize_gray(decode_gray(f.read_bytes(), f.name)[0], SIZE)) for f in files]
    return torch.from_numpy(np.stack(grays))[:, None]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {variant: _checkpoint(root, variant) for variant in KINDS}


def _export(checkpoint: Path, fmt: str, capsys) -> tuple[Path, dict]:
    out = checkpoint.with_name(f"{checkpoint.stem}_{fmt}" + (".onnx" if fmt == "onnx" else ".pt"))
    assert export_main([str(checkpoint), "--format", fmt, "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    return out, report


def _compare(outputs: dict, checkpoint: Path, images: torch.Tensor, variant: str) -> dict:
    """Max |exported - eager| per output; also checks that the outputs carry signal (so equality
    is not two zeros agreeing) and that they are the EMA's, not the raw weights'."""
    assert sorted(outputs) == list(KINDS[variant])
    eager = eager_outputs(load_model(checkpoint)[0], images)
    raw = eager_outputs(load_model(checkpoint, weights="raw")[0], images)
    differences = {}
    for name, value in outputs.items():
        value = torch.as_tensor(value)
        assert value.dtype == torch.float32 and value.shape == eager[name].shape, name
        assert float(value.std()) > 1e-6, f"{name} is constant"
        differences[name] = float((value - eager[name]).abs().max())
        assert differences[name] <= TOLERANCE, (name, differences[name])
        assert float((value - raw[name]).abs().max()) > 100 * TOLERANCE, f"{name}: raw weights"
    return differences


@pytest.mark.parametrize("variant", sorted(KINDS))
def test_torchscript_equals_the_eager_model(variant, checkpoints, real_images, capsys):
    path, report = _export(checkpoints[variant], "torchscript", capsys)
    assert report["weights"] == "ema" and report["variant"] == variant
    assert report["image_size"] == SIZE and report["outputs"] == [
        n for n in ("probabilities", "mask", "saliency") if n in KINDS[variant]]
    module = torch.jit.load(str(path))  # torch alone, no mmdist
    print(variant, "torchscript", _compare(module(real_images), checkpoints[variant],
                                           real_images, variant))
    # Any batch size (the parts were traced with 2), and under no_grad (the saliency turns
    # autograd on for itself).
    with torch.no_grad():
        one = module(real_images[3:4])
    full = module(real_images)
    for name in KINDS[variant]:
        assert torch.allclose(one[name], full[name][3:4], atol=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(KINDS))
def test_onnx_equals_the_eager_model(variant, checkpoints, real_images, capsys):
    import onnxruntime

    path, report = _export(checkpoints[variant], "onnx", capsys)
    assert report["outputs"] == [n for n in ("probabilities", "mask", "saliency")
                                 if n in KINDS[variant]]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    names = [o.name for o in session.get_outputs()]
    for batch in (real_images, real_images[:1]):
        values = session.run(names, {"images": batch.numpy()})
        differences = _compare(dict(zip(names, values)), checkpoints[variant], batch, variant)
    print(variant, "onnx", differences)


def test_a_run_directory_exports_its_best_checkpoint(tmp_path, real_images, capsys):
    """As evaluate picks: best.pt (here step 2) over the newer step 4, its EMA weights."""
    best = _checkpoint(tmp_path, "multimix", seed=0)
    run = best.parents[1]
    atomic_torch_save(torch.load(best, weights_only=False), best_checkpoint_path(run))
    best.unlink()
    newer = _checkpoint(tmp_path / "other", "multimix", seed=7)
    shutil.copy(newer, run / "checkpoints" / "step_00000004.pt")
    assert export_main([str(run), "--format", "torchscript"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(best_checkpoint_path(run)) and report["weights"] == "ema"
    path = run / "export" / "model.torchscript.pt"
    assert report["file"] == str(path)
    _compare(torch.jit.load(str(path))(real_images), best_checkpoint_path(run), real_images,
             "multimix")


def test_predict_reads_exported_files_and_run_directories(tmp_path, checkpoints, real_images,
                                                           capsys):
    """The same JSON line and mask from the checkpoint, its run directory and its export."""
    from PIL import Image

    image = tmp_path / "chest.png"
    Image.fromarray(real_images[0, 0].numpy()).resize((90, 80)).save(image)
    exported, _ = _export(checkpoints["multimix"], "torchscript", capsys)
    lines = {}
    for name, source in (("checkpoint", checkpoints["multimix"]), ("exported", exported),
                         ("run", checkpoints["multimix"].parents[1])):
        assert predict_main([str(source), str(image), "--out", str(tmp_path / name),
                             "--device", "cpu"]) == 0
        (lines[name],) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for name in ("exported", "run"):
        for cls, p in lines["checkpoint"]["probabilities"].items():
            assert lines[name]["probabilities"][cls] == pytest.approx(p, abs=1e-6), name
        masks = [np.asarray(Image.open(lines[n]["mask"])) for n in ("checkpoint", name)]
        assert masks[0].shape == (80, 90) and (masks[0] == masks[1]).all(), name
        assert 0.0 < lines[name]["lung_fraction"] < 1.0
    # The weights of an exported file were chosen at export.
    assert predict_main([str(exported), str(image), "--weights", "raw"]) == 2
    assert "chosen at export" in capsys.readouterr().err


def test_onnx_refusal_names_torchscript(tmp_path, checkpoints, monkeypatch, capsys):
    def unsupported(model, image_size):
        raise NotImplementedError("convolution_backward with stride [2, 2] or transposed")

    monkeypatch.setattr(onnx_export, "forward_graph", unsupported)
    out = tmp_path / "refused.onnx"
    assert export_main([str(checkpoints["multimix"]), "--format", "onnx", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "model.variant=multimix" in line and line.endswith("use --format torchscript")
    assert not out.exists()
    assert export_main([str(tmp_path / "nothing.pt"), "--format", "onnx"]) == 2
    assert "nothing.pt" in capsys.readouterr().err


def test_written_out_backward_equals_autograd():
    """The two backward operators the ONNX route writes out, against autograd itself: a pooled
    input with ties (torch's backward sends each window's gradient to its first maximum) and a
    padded 3x3 convolution; a strided convolution is refused rather than got wrong."""
    x = torch.tensor([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0],
                      [3.0, 3.0, 3.0, 3.0]])[None, None].requires_grad_(True)
    pooled, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    (expected,) = torch.autograd.grad(pooled, x, grad)
    got = onnx_export._max_pool_input_grad(grad, x.detach(), [2, 2], [2, 2], [0, 0], [1, 1], False,
                                           indices)
    assert torch.equal(got, expected)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    grad = torch.randn(2, 5, 8, 8)
    (expected,) = torch.autograd.grad(conv(x), x, grad)
    got, _, _ = onnx_export._convolution_input_grad(grad, x, conv.weight, [5], [1, 1], [1, 1],
                                                    [1, 1], False, [0, 0], 1, [True, False, False])
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(NotImplementedError, match="stride"):
        onnx_export._convolution_input_grad(grad, x, conv.weight, [5], [2, 2], [1, 1], [1, 1],
                                            False, [0, 0], 1, [True, False, False])
