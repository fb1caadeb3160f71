"""ONNX export: the ExportedNet traced to aten operators, the saliency's backward included.

torch's ONNX exporters cannot hold ``torch.autograd.grad`` (pytorch#105838, #110866). Here
``make_fx`` traces the forward below autograd, so the input gradient appears as the backward
operators that autograd ran; torch's decompositions turn most of them into forward operators, and
the two that have none are written out here for the layers MultiMix uses:

- convolution_backward (input gradient only, stride 1): the transposed convolution with the same
  weights and padding;
- max_pool2d_with_indices_backward: the output gradient scattered back to the argmax positions
  that the forward's max_pool2d_with_indices recorded (ties resolved as torch's own backward).

The resulting graph (batch size free) is exported with torch.onnx.export. A layer outside these
cases raises NotImplementedError, which the command reports as "use TorchScript".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from mmdist.export.graph import exported_net, output_names
from mmdist.model import MultiMixNet

aten = torch.ops.aten


def _convolution_input_grad(grad, inputs, weight, bias_sizes, stride, padding, dilation,
                            transposed, output_padding, groups, output_mask):
    if list(output_mask)[1:] != [False, False]:
        raise NotImplementedError("convolution_backward for weights or bias")
    if transposed or any(s != 1 for s in stride):
        raise NotImplementedError(f"convolution_backward with stride {list(stride)} or transposed")
    grad_input = aten.convolution.default(grad, weight, None, stride, padding, dilation, True,
                                          [0] * len(stride), groups)
    return grad_input, None, None


def _max_pool_input_grad(grad, inputs, kernel_size, stride, padding, dilation, ceil_mode, indices):
    n, c, h, w = inputs.shape
    # indices hold each window's argmax as a flat position in its (H, W) plane.
    flat = torch.zeros((n, c, h * w), dtype=grad.dtype, device=grad.device)
    return flat.scatter_add(2, indices.flatten(2), grad.flatten(2)).view(n, c, h, w)


def input_gradient_decompositions() -> dict:
    """torch's core aten decompositions plus the two backward operators written out above."""
    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = _convolution_input_grad
    table[aten.max_pool2d_with_indices_backward.default] = _max_pool_input_grad
    return table


def forward_graph(model: MultiMixNet, image_size: int) -> torch.fx.GraphModule:
    """The ExportedNet as one aten graph of forward operators; returns its outputs as a tuple in
    output_names order. The batch dimension stays symbolic."""
    net = exported_net(model)
    names = output_names(model)

    def as_tuple(images):
        out = net(images)
        return tuple(out[name] for name in names)

    example = torch.zeros(2, 1, image_size, image_size, dtype=torch.uint8)
    return make_fx(as_tuple, decomposition_table=input_gradient_decompositions(),
                   tracing_mode="symbolic", _allow_non_fake_inputs=True)(example)


def save_onnx(model: MultiMixNet, image_size: int, metadata: dict, path: Path) -> Path:
    """Export ``model`` to ``path`` as ONNX (input 'images' uint8 (N, 1, S, S); outputs named as
    output_names), with ``metadata`` as the model's 'mmdist' metadata property."""
    import onnx

    graph = forward_graph(model, image_size)
    example = torch.zeros(2, 1, image_size, image_size, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["images"],
                                    output_names=list(output_names(model)),
                                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "mmdist", json.dumps(metadata)
    onnx.save_model(proto, str(partial))
    partial.replace(path)
    return path
