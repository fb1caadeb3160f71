"""TorchScript export: the ExportedNet scripted, with its encoder, classifier and decoder traced.

The parts are traced (fixed layer structure, no data-dependent branches in eval mode; batch size
stays free because every shape is read from the input) and the forward around them is scripted,
so the saliency's ``torch.autograd.grad`` is part of the saved graph. The file loads with
``torch.jit.load`` alone; metadata (variant, image size, weights, outputs) rides along as the
archive's extra file ``mmdist.json``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from mmdist.export.graph import ExportedNet, exported_net
from mmdist.model import MultiMixNet

METADATA_FILE = "mmdist.json"


def _trace(module: torch.nn.Module, example) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch.jit.trace is deprecated in favour of torch.export, which cannot hold an
        # autograd.grad call (the reason for TorchScript here).
        warnings.simplefilter("ignore", FutureWarning)
        # group_norm's check that a group holds more than one value is recorded as a constant
        # (it raises, it computes nothing): harmless at any batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, example, check_trace=False)


def scripted(model: MultiMixNet, image_size: int) -> torch.jit.ScriptModule:
    """The model's ExportedNet as one ScriptModule (see mmdist.export.graph for its forward)."""
    net = exported_net(model)
    x = torch.zeros(2, 1, image_size, image_size).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = net.encoder(x)
        encoder = _trace(net.encoder, x)
        classifier = _trace(net.classifier, features[-1]) if net.classifier is not None else None
        decoder = None
        if net.decoder is not None:
            bridge = torch.cat([x, x.abs()], dim=1)
            decoder = _trace(net.decoder, tuple(features) + (bridge,))
    wrapper = ExportedNet(encoder, classifier, decoder, net.bridged, net.inner_scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(wrapper.eval())


def save_torchscript(model: MultiMixNet, image_size: int, metadata: dict, path: Path) -> Path:
    """Script ``model`` and write it to ``path`` (with ``metadata`` as mmdist.json inside)."""
    module = scripted(model, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(module, str(partial), _extra_files={METADATA_FILE: json.dumps(metadata)})
    partial.replace(path)
    return path
