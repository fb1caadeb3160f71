"""Read an exported file back (TorchScript with torch alone, ONNX with onnxruntime) and run it.

mmdist.predict and the export's own check use this; a user needs only the two calls it makes
(``torch.jit.load(path)(images)``, or ``onnxruntime.InferenceSession(path).run(None,
{"images": images})``).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from mmdist.export.torchscript import METADATA_FILE


def export_format(path: str | Path) -> str | None:
    """'torchscript' or 'onnx' for a file written by mmdist.export, None for anything else (a
    checkpoint, say)."""
    path = Path(path)
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith(f"/extra/{METADATA_FILE}") for name in archive.namelist()):
                return "torchscript"
        return None
    return "onnx" if path.suffix == ".onnx" else None


class ExportedModel:
    """An exported file, loaded. ``metadata``: the dict mmdist.export wrote (variant,
    image_size, weights, step, outputs, ...). Call with uint8 (N, 1, S, S) images (S =
    metadata['image_size']) to get {output name: float32 tensor on the CPU}."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.format = export_format(self.path)
        if self.format is None:
            raise RuntimeError(f"{self.path}: not a file written by mmdist.export")
        self.device = torch.device(device)
        if self.format == "torchscript":
            extra = {METADATA_FILE: ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated for torch.export
                self._module = torch.jit.load(str(self.path), map_location=self.device,
                                              _extra_files=extra)
            self.metadata = json.loads(extra[METADATA_FILE])
        else:
            import onnxruntime

            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda":
                providers.insert(0, "CUDAExecutionProvider")
            self._session = onnxruntime.InferenceSession(str(self.path), providers=providers)
            self.metadata = json.loads(self._session.get_modelmeta().custom_metadata_map["mmdist"])

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.format == "torchscript":
            with torch.no_grad():
                out = self._module(images.to(self.device))
            return {name: value.cpu() for name, value in out.items()}
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {"images": np.ascontiguousarray(images.cpu().numpy())})
        return {name: torch.from_numpy(value) for name, value in zip(names, values)}
