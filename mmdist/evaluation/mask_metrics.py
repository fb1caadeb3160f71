"""The two per-image mask comparisons that need more than pixel counts: the average Hausdorff
distance and SSIM, batched, with the scikit-image definitions they equal kept as references.

``hausdorff_scores`` and ``ssim_scores`` give what ``reference_average_hausdorff`` and
``reference_mask_ssim`` (scikit-image) give, to rounding (the tests hold them within 1e-6), many
times faster (``python -m mmdist.bench eval`` measures both):

- Hausdorff: scikit-image queries a k-d tree of *every* foreground pixel of one mask with every
  pixel of the other. Here a pixel inside the other mask is at distance 0; the mask grown by one
  distance shell at a time (1, sqrt 2, 2) adds the pixels at exactly that distance; only the
  rest are looked up, in a tree of the other mask's edge pixels, or in one exact Euclidean
  distance transform when there are too many of them for the tree to pay.
- SSIM on {0, 1} masks: x * x = x, so every 7x7 window's SSIM depends only on three integer
  counts (pixels of x, of y, of both), and is read from a float64 table of the 50**3 possible
  count triples, computed with scikit-image's formula. Torch, on the masks' device.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.metrics import hausdorff_distance, structural_similarity

# The exact parameters the evaluation has always passed to scikit-image's structural_similarity:
# its defaults (a 7x7 uniform window, sample covariances, K1 0.01, K2 0.03) with data_range 1.
SSIM_WINDOW = 7
SSIM_DATA_RANGE = 1.0
SSIM_K1, SSIM_K2 = 0.01, 0.03

# Far pixels are looked up in a k-d tree of the E edge pixels while E + 2 Q (Q far pixels) is under
# this share of the image, else in one distance transform: on one core at 256 px the tree costs
# about (E + 2 Q) * 0.3 us and the transform H * W * 0.04 us, equal near 0.13.
KD_TREE_SHARE = 0.13

CHUNK = 16  # images per pass over a batch

# Mismatched pixels this near the other mask are counted by distance shells (dilations) rather
# than looked up: at 256 px, radius 2 (distances 1, sqrt 2, 2) measured faster than 1 or 3.
NEAR_RADIUS = 2


def _check_shapes(pred, true) -> None:
    if pred.ndim != 3 or pred.shape != true.shape:
        raise ValueError(f"masks must both be (N, H, W), got {tuple(pred.shape)} and "
                         f"{tuple(true.shape)}")


# --------------------------------------------------------------------------------------------
# References (scikit-image)
# --------------------------------------------------------------------------------------------

def reference_average_hausdorff(pred: np.ndarray, true: np.ndarray) -> float:
    """Average Hausdorff distance of two (H, W) bool masks by scikit-image ('modified' method):
    max(mean_a min_b |a - b|, mean_b min_a |a - b|) over foreground pixels, in pixels; 0 when
    both are empty, hypot(H, W) when exactly one is."""
    value = float(hausdorff_distance(pred, true, method="modified"))
    if math.isinf(value):  # exactly one mask is empty
        return float(math.hypot(*pred.shape))
    return value


def reference_mask_ssim(pred: np.ndarray, true: np.ndarray) -> float:
    """SSIM of two (H, W) binary masks as {0, 1} float64 images by scikit-image."""
    return float(structural_similarity(pred.astype(np.float64), true.astype(np.float64),
                                       data_range=SSIM_DATA_RANGE))


# --------------------------------------------------------------------------------------------
# Hausdorff
# --------------------------------------------------------------------------------------------

_CROSS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _shells(radius: int) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    """[(d2, the (row, column) offsets at squared distance d2)] for 0 < d2 <= radius**2, by d2."""
    shells: dict[int, list[tuple[int, int]]] = {}
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if 0 < dy * dy + dx * dx <= radius * radius:
                shells.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    return [(d2, tuple(offsets)) for d2, offsets in sorted(shells.items())]


_SHELLS = _shells(NEAR_RADIUS)


def _with_neighbours(masks: np.ndarray, combine, offsets,
                     into: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W) bool -> each pixel of ``into`` (default: masks) combined (np.logical_and /
    np.logical_or) with the masks' pixels at the (row, column) offsets from it; one outside the
    image leaves it as it is."""
    out = (masks if into is None else into).copy()
    h, w = masks.shape[1:]
    for dy, dx in offsets:
        target = out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
        combine(target, masks[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)],
                out=target)
    return out


def count_pixels(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool numpy -> (N,) int64 True pixels per image (twice as fast as bool .sum)."""
    flat = masks.reshape(len(masks), -1).view(np.uint8)
    return flat.sum(axis=1, dtype=np.uint32).astype(np.int64)


def _points(masks: np.ndarray) -> list[np.ndarray]:
    """(N, H, W) bool -> per image, the (K, 2) int64 (row, column) of its True pixels."""
    n, h, w = masks.shape
    # flatnonzero is ten times faster than nonzero on a 3-d array.
    flat = np.flatnonzero(masks)
    bounds = np.searchsorted(flat, np.arange(n + 1) * (h * w))
    rows, cols = np.divmod(flat % (h * w), w)
    points = np.stack([rows, cols], axis=1)
    return [points[bounds[i]:bounds[i + 1]] for i in range(n)]


def _far_distance_sum(target: np.ndarray, edge: np.ndarray, queries: np.ndarray) -> float:
    """Sum over the (Q, 2) query pixels (none inside ``target``, an (H, W) bool mask with at least
    one pixel) of the Euclidean distance to the nearest ``target`` pixel; ``edge`` is (E, 2)."""
    if not len(queries):
        return 0.0
    if len(edge) + 2 * len(queries) <= KD_TREE_SHARE * target.size:
        return float(cKDTree(edge).query(queries, k=1)[0].sum())
    distances = ndimage.distance_transform_edt(~target)
    return float(distances[queries[:, 0], queries[:, 1]].sum())


def _distance_sums(query: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks -> (N,) float64: per image, the sum over ``query`` pixels of the
    distance to the nearest ``target`` pixel (images with an empty target give 0)."""
    outside = query & ~target
    # Most mismatched pixels of a prediction lie within a pixel or two of the other mask. Growing
    # the target one distance shell at a time, the pixels a shell adds are at exactly its
    # distance; only the pixels beyond the last shell are looked up.
    sums = np.zeros(len(query))
    within = target
    for d2, offsets in _SHELLS:
        grown = _with_neighbours(target, np.logical_or, offsets, into=within)
        sums += math.sqrt(d2) * count_pixels(outside & grown & ~within)
        within = grown
    far = _points(outside & ~within)
    # The nearest target pixel to a pixel outside it has a 4-neighbour outside it (else its
    # neighbour towards the pixel would be nearer), so the tree holds only those edge pixels.
    # The image border does not make an edge, for the same reason.
    edges = _points(target & ~_with_neighbours(target, np.logical_and, _CROSS))
    for i in np.flatnonzero((np.array([len(f) for f in far]) > 0) & target.any(axis=(1, 2))):
        sums[i] += _far_distance_sum(target[i], edges[i], far[i])
    return sums.astype(np.float64)


def hausdorff_scores(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Average Hausdorff distance per image, equal to ``reference_average_hausdorff``.

    pred, true: (N, H, W) bool numpy masks. Returns (N,) float64 (pixels).
    """
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    _check_shapes(pred, true)
    pred_area, true_area = count_pixels(pred), count_pixels(true)
    empty = (pred_area == 0) | (true_area == 0)
    pred_to_true, true_to_pred = np.zeros(len(pred)), np.zeros(len(pred))
    # Chunks keep the masks and their neighbourhoods in cache: 2x faster than all at once.
    for start in range(0, len(pred), CHUNK):
        chunk = slice(start, start + CHUNK)
        pred_to_true[chunk] = _distance_sums(pred[chunk], true[chunk])
        true_to_pred[chunk] = _distance_sums(true[chunk], pred[chunk])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.maximum(pred_to_true / pred_area, true_to_pred / true_area)
    # The conventions of the reference: 0 for two empty masks, hypot(H, W) for one.
    out[empty] = np.where(pred_area[empty] == true_area[empty], 0.0, math.hypot(*pred.shape[1:]))
    return out


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

_COUNTS = SSIM_WINDOW * SSIM_WINDOW + 1  # a window holds 0 .. 49 pixels of a mask


@functools.lru_cache(maxsize=None)
def _ssim_table(device: torch.device) -> torch.Tensor:
    """(50**3,) float64: a 7x7 window's SSIM indexed by (x count * 50 + y count) * 50 + both count,
    with scikit-image's formula (its uniform filter divides window sums by 49)."""
    n = SSIM_WINDOW * SSIM_WINDOW
    counts = torch.arange(_COUNTS, dtype=torch.float64)
    sx, sy, sxy = torch.meshgrid(counts, counts, counts, indexing="ij")
    ux, uy, uxy = sx / n, sy / n, sxy / n
    cov_norm = n / (n - 1)  # use_sample_covariance=True
    # On {0, 1} images the windows' mean of x * x is the mean of x.
    vx = cov_norm * (ux - ux * ux)
    vy = cov_norm * (uy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    ssim = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return ssim.reshape(-1).to(device)


def _window_sums(values: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) int -> (N, H - size + 1, W - size + 1) sums over every full size x size window
    (scikit-image crops the windows that reach past the border before taking the mean)."""
    for dim in (2, 1):
        n = values.shape[dim]
        # Sums of 1, 2, 4, ... neighbours by doubling, added up by the bits of size: 4 additions
        # per axis for 7 (a cumulative sum is ten times slower on the CPU).
        power, width, offset, out = values, 1, 0, None
        while True:
            if size & width:
                part = power.narrow(dim, offset, n - size + 1)
                out = part if out is None else out + part
                offset += width
            if 2 * width > size:
                break
            length = power.shape[dim] - width
            power = power.narrow(dim, 0, length) + power.narrow(dim, width, length)
            width *= 2
        values = out
    return values


def ssim_scores(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray) -> torch.Tensor:
    """SSIM per image of binary masks, equal to ``reference_mask_ssim``.

    pred, true: (N, H, W) bool or {0, 1} masks (H, W >= 7), tensors on any device or numpy.
    Returns (N,) float64 on pred's device.
    """
    pred = torch.as_tensor(pred)
    true = torch.as_tensor(true, device=pred.device)
    _check_shapes(pred, true)
    if min(pred.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{tuple(pred.shape[1:])}")
    table = _ssim_table(pred.device)
    out = torch.empty(len(pred), dtype=torch.float64, device=pred.device)
    # Chunks keep the int32 and int64 intermediates in cache: 3x faster than all at once.
    for start in range(0, len(pred), CHUNK):
        x, y = pred[start:start + CHUNK].bool(), true[start:start + CHUNK].bool()
        # One window sum of the base-50 digits gives all three counts (a sum never carries: <= 49).
        digits = (x.to(torch.int32) * (_COUNTS * _COUNTS)).add_(y.to(torch.int32) * _COUNTS)
        digits.add_((x & y).to(torch.int32))
        index = _window_sums(digits, SSIM_WINDOW).long()
        out[start:start + CHUNK] = table.take(index).mean(dim=(1, 2))
    return out
