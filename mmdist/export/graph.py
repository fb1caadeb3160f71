"""The exported network: uint8 X-rays in, class and lung-mask probabilities and the saliency out.

``ExportedNet`` wraps a trained MultiMixNet's parts behind one forward that needs nothing of
mmdist: the normalisation of mmdist.data.step_batch.to_model_input, the encoder, the saliency
(|d max-class-score / d input|, by ``torch.autograd.grad`` as mmdist.model.saliency takes it), the
classifier and the decoder (fed the saliency bridge [X, S] in the bridged variants). Its forward
is written in TorchScript's subset, so the same module is scripted (with traced parts, see
mmdist.export.torchscript) and traced to aten operators (with its eager parts, see
mmdist.export.onnx).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from mmdist.model import MultiMixNet

OUTPUTS = ("probabilities", "mask", "saliency")
"""Output names, in this order where present: (N, 2) softmax over (normal, pneumonia); (N, 1, S, S)
sigmoid of the lung-mask logits; (N, 1, S, S) saliency >= 0 (float32 all three)."""


class EncoderPart(nn.Module):
    """(N, 1, S, S) float in [-1, 1] -> the five encoder features, finest first (a tuple, so a
    trace keeps them apart)."""

    def __init__(self, model: MultiMixNet):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images: torch.Tensor):
        return tuple(self.encoder(images))


class DecoderPart(nn.Module):
    """The five features and the bridge (N, 2, S, S) -> mask logits (N, 1, S, S); the bridge is
    ignored by a decoder built without one."""

    def __init__(self, model: MultiMixNet):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, f0, f1, f2, f3, f4, bridge):
        bridge = bridge if self.decoder.bridge_channels else None
        return self.decoder([f0, f1, f2, f3, f4], bridge)


class ExportedNet(nn.Module):
    """forward(images uint8 (N, 1, S, S)) -> {name: float32 tensor} for the OUTPUTS the variant
    has: 'probabilities' and 'saliency' with a classifier, 'mask' with a decoder.

    The saliency needs autograd: call it with gradients allowed or under torch.no_grad() (it
    turns them on for its own pass), not under torch.inference_mode().
    """

    def __init__(self, encoder: nn.Module, classifier: Optional[nn.Module],
                 decoder: Optional[nn.Module], bridged: bool, inner_scale: float):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.decoder = decoder
        self.bridged = bridged
        self.inner_scale = inner_scale

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        x = images.float() / 127.5 - 1.0  # mmdist.data.step_batch.to_model_input, bit for bit
        grad_was_on = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        leaf = x.detach().requires_grad_(True)
        f0, f1, f2, f3, f4 = self.encoder(leaf)
        saliency = torch.zeros_like(x)
        classifier = self.classifier
        if classifier is not None:
            logits = classifier(f4)
            # One gradient for the whole batch: each image's score depends on that image only
            # (instance norm), as in mmdist.model.saliency.
            score = logits.max(dim=1).values.sum() * self.inner_scale
            grads = torch.autograd.grad([score], [leaf])
            grad = grads[0]
            assert grad is not None
            saliency = grad.abs() / self.inner_scale
            out["probabilities"] = torch.softmax(logits.detach(), dim=1)
            out["saliency"] = saliency.detach()
        torch.set_grad_enabled(grad_was_on)
        decoder = self.decoder
        if decoder is not None:
            bridge = torch.cat([x, saliency.detach()], dim=1)
            mask_logits = decoder(f0.detach(), f1.detach(), f2.detach(), f3.detach(), f4.detach(),
                                  bridge)
            out["mask"] = torch.sigmoid(mask_logits)
        return out


def exported_net(model: MultiMixNet) -> ExportedNet:
    """The eager ExportedNet of a model in eval mode (its parameters frozen: the exported graph
    differentiates the input only)."""
    model = model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    bridged = model.saliency_mode != "none"
    return ExportedNet(EncoderPart(model), model.classifier,
                       DecoderPart(model) if model.decoder is not None else None,
                       bridged, model.saliency_inner_scale if bridged else 1.0)


def output_names(model: MultiMixNet) -> tuple[str, ...]:
    """The OUTPUTS this model's export returns, in OUTPUTS order."""
    return tuple(name for name, on in zip(OUTPUTS, (model.classifier is not None,
                                                    model.decoder is not None,
                                                    model.classifier is not None)) if on)


@torch.no_grad()
def eager_outputs(model: MultiMixNet, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """What mmdist's own eager path gives for uint8 (N, 1, S, S) ``images`` (the reference an
    export must reproduce, and predict's network pass): the model's forward as evaluate calls it,
    with the saliency of the unbridged variants taken as the bridge would take it. Returns
    float32 tensors on the model's device, named as OUTPUTS."""
    from mmdist.data.step_batch import to_model_input
    from mmdist.model.saliency import input_saliency

    device = next(model.parameters()).device
    x = to_model_input(images.cpu()).to(device)  # normalised on the CPU, as evaluate does
    out: Dict[str, torch.Tensor] = {}
    logits = saliency = None
    if model.decoder is not None:
        net = model(seg_images=x)
        out["mask"] = torch.sigmoid(net.seg_logits)
        logits, saliency = net.seg_cls_logits, net.saliency
    if model.classifier is not None:
        if saliency is None:
            _, logits, saliency = input_saliency(x, model.encode, "detached")
        out["probabilities"] = torch.softmax(logits, dim=1)
        out["saliency"] = saliency
    return out
