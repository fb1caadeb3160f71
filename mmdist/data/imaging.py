"""Decode any chest X-ray file into 8-bit grayscale, resize it, and merge lung masks.

Formats: everything Pillow reads (PNG, JPEG, GIF, BMP, TIFF), JSRT raw ``.IMG`` files
(2048x2048, 12-bit, big-endian, stored as film density: high = dark) and uncompressed DICOM.
Modes: L; RGB/RGBA/P (luma; equal channels come out unchanged); LA (the L band); 16-bit and
32-bit integer or float images (stretched linearly from their own minimum to maximum, because the
bit depth a file declares is often wider than the detector's).

A file that cannot be decoded raises ``CorruptImage`` (prepare lists it as a reject and goes on);
a mask whose frame cannot be the image's raises ``MaskMismatch`` (a DatasetError: prepare stops).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mmdist.data.records import DatasetError

JSRT_SHAPE = (2048, 2048)
JSRT_MAX = 4095  # 12-bit
MASK_ASPECT_TOLERANCE = 0.15
"""Largest relative difference of width/height between an image and its mask. Resized copies
(Shenzhen's 1000x1000 images of ~3000x2900 originals) stay within it; a transposed mask does not."""


class CorruptImage(Exception):
    """An image or mask file cannot be decoded. The message names the file and the reason."""


class MaskMismatch(DatasetError):
    """A mask that cannot be paired with its image (wrong frame, or left/right disagree)."""


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Stretch a >8-bit grayscale array linearly to 0..255 (min -> 0, max -> 255)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    data = array.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.rint((data - low) * (255.0 / (high - low))).astype(np.uint8)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 from a Pillow image of any mode."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image)
    if mode == "LA":
        return np.asarray(image.getchannel("L"))
    if mode in ("1", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La"):
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return np.asarray(image.convert("L"))
    # 'I;16', 'I;16B', 'I', 'F' and friends: wide grayscale.
    return _to_uint8(np.asarray(image))


def _decode_jsrt(data: bytes) -> np.ndarray:
    expected = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2
    if len(data) != expected:
        raise CorruptImage(f"JSRT raw image has {len(data)} bytes, expected {expected} "
                           f"({JSRT_SHAPE[0]}x{JSRT_SHAPE[1]} 16-bit words)")
    raw = np.frombuffer(data, dtype=">u2").reshape(JSRT_SHAPE)
    # Stored as optical density (high = dark); invert so bone is bright like every other source.
    density = np.minimum(raw, JSRT_MAX).astype(np.uint32)
    return (((JSRT_MAX - density) * 255 + JSRT_MAX // 2) // JSRT_MAX).astype(np.uint8)


def _decode_dicom(data: bytes) -> np.ndarray:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    pixels = np.asarray(dataset.pixel_array)
    if pixels.ndim == 3:  # colour or multi-frame: take luma / the first frame
        pixels = pixels[0] if pixels.shape[-1] not in (3, 4) else pixels[..., :3].mean(-1)
    gray = _to_uint8(pixels) if pixels.dtype != np.uint8 else pixels
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        gray = 255 - gray
    return gray


def decode_gray(data: bytes, name: str,
                draft_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode file bytes into ((H, W) uint8 grayscale, (width, height) of the file).

    name: the file name (its suffix picks the JSRT/DICOM readers; also used in errors).
    draft_size: JPEG only: let the decoder shrink by a power of two while staying >= this size
        (much faster for large JPEGs); the returned array is then smaller than the file's
        (width, height), which is still reported at full resolution.
    """
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".img":
            gray = _decode_jsrt(data)
            full = (gray.shape[1], gray.shape[0])
        elif suffix in (".dcm", ".dicom") or data[128:132] == b"DICM":
            gray = _decode_dicom(data)
            full = (gray.shape[1], gray.shape[0])
        else:
            with Image.open(io.BytesIO(data)) as image:
                full = image.size
                if draft_size and image.format == "JPEG":
                    image.draft("L", (draft_size, draft_size))
                image.load()
                gray = _pil_to_gray(image)
    except CorruptImage:
        raise
    except Exception as exc:  # Pillow raises many types for a broken file; all mean "unreadable"
        raise CorruptImage(f"{type(exc).__name__}: {exc}") from None
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise CorruptImage(f"decoded to shape {gray.shape}, expected a 2-D image")
    return np.ascontiguousarray(gray), (int(full[0]), int(full[1]))


def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8, bilinear with antialiasing (the frame is squashed to a
    square, as the paper's pipeline does)."""
    if gray.shape == (size, size):
        return gray
    image = Image.fromarray(gray, mode="L")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def binarize_mask(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> {0, 1} uint8. Masks come as {0, 1} or {0, 255} (GIF palettes included)."""
    threshold = 0 if gray.max(initial=0) <= 1 else 127
    return (gray > threshold).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) {0, 1} uint8 -> (size, size) with nearest neighbour (no new label values)."""
    if mask.shape == (size, size):
        return mask
    image = Image.fromarray(mask, mode="L")
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST))


def check_mask_frame(mask_hw: tuple[int, int], image_hw: tuple[int, int], mask_name: str,
                     image_name: str) -> None:
    """Raise MaskMismatch when a mask cannot cover the same frame as its image."""
    mask_aspect = mask_hw[1] / mask_hw[0]
    image_aspect = image_hw[1] / image_hw[0]
    if abs(mask_aspect / image_aspect - 1.0) > MASK_ASPECT_TOLERANCE:
        raise MaskMismatch(f"mask {mask_name} ({mask_hw[1]}x{mask_hw[0]}) cannot be matched to "
                           f"image {image_name} ({image_hw[1]}x{image_hw[0]}): their aspect "
                           f"ratios differ by more than {MASK_ASPECT_TOLERANCE:.0%} "
                           f"(transposed or from another image?)")


def merge_masks(parts: list[tuple[str, np.ndarray]], size: int) -> np.ndarray:
    """Merge (name, (H, W) {0,1}) lung masks (left + right) into one (size, size) {0,1} mask.

    Each part is resized to ``size`` with nearest neighbour and the parts are OR-ed, so left and
    right masks at a resolution other than the image's still line up with it.
    """
    first_name, first = parts[0]
    merged = np.zeros((size, size), dtype=np.uint8)
    for name, mask in parts:
        if mask.shape != first.shape:
            raise MaskMismatch(f"masks {first_name} ({first.shape[1]}x{first.shape[0]}) and "
                               f"{name} ({mask.shape[1]}x{mask.shape[0]}) of one image differ "
                               f"in size and cannot be merged")
        np.maximum(merged, resize_mask(mask, size), out=merged)
    return merged
