"""Reading a step's rows out of an ImageSet's uint8 arrays (memory-mapped or in memory)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gather_rows(array: np.ndarray, indices: np.ndarray, size: int, nearest: bool) -> torch.Tensor:
    """Read rows of an (N, H, W) uint8 array as (B, 1, S, S): an array in memory with one gather;
    a memory map (or a stack of them) in file order (sorted reads), then put in batch order."""
    if type(array) is np.ndarray:  # a second copy and allocation cost 5x the gather itself
        rows = array[indices]
    else:
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices),) + array.shape[1:], dtype=np.uint8)
        rows[order] = array[indices[order]]
    tensor = torch.from_numpy(rows).unsqueeze(1)
    if tensor.shape[-1] != size:
        mode = "nearest" if nearest else "bilinear"
        kwargs = {} if nearest else {"antialias": True, "align_corners": False}
        tensor = F.interpolate(tensor.float(), size=(size, size), mode=mode, **kwargs)
        tensor = tensor.round_().clamp_(0, 255).to(torch.uint8)
    return tensor
