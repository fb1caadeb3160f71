"""Decoding any mode to 8-bit gray, JSRT raw files, resizing, mask binarising and merging."""

import io

import numpy as np
import pytest
from PIL import Image

from mmdist.data.imaging import (CorruptImage, MaskMismatch, binarize_mask, check_mask_frame,
                                 decode_gray, merge_masks, resize_gray, resize_mask)


def encode(array, mode=None, fmt="PNG") -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GRAY = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2


@pytest.mark.parametrize("make", [
    lambda: encode(GRAY),
    lambda: encode(np.repeat(GRAY[..., None], 3, 2)),                       # RGB, equal channels
    lambda: encode(np.dstack([np.repeat(GRAY[..., None], 3, 2), np.full_like(GRAY, 7)])),  # RGBA
    lambda: encode(GRAY, "LA"),
    lambda: encode(GRAY, "P"),
])
def test_eight_bit_modes_decode_to_the_same_gray(make):
    gray, size = decode_gray(make(), "x.png")
    assert gray.dtype == np.uint8 and size == (10, 12)
    np.testing.assert_array_equal(gray, GRAY)


def test_sixteen_bit_is_stretched_to_full_range():
    wide = (GRAY.astype(np.uint16) * 16 + 1000)
    gray, _ = decode_gray(encode(wide), "x.png")
    assert gray.min() == 0 and gray.max() == 255
    expected = np.rint((wide - wide.min()) * 255.0 / (wide.max() - wide.min())).astype(np.uint8)
    np.testing.assert_array_equal(gray, expected)


def test_jsrt_raw_is_big_endian_12_bit_inverted():
    raw = np.zeros((2048, 2048), dtype=">u2")
    raw[0, 0], raw[0, 1], raw[0, 2] = 4095, 0, 2048
    gray, size = decode_gray(raw.tobytes(), "JPCLN001.IMG")
    assert size == (2048, 2048)
    assert (gray[0, 0], gray[0, 1], gray[0, 2]) == (0, 255, 127)
    # Read as little-endian the same bytes would give different values: the byte order matters.
    swapped = raw.astype("<u2").view(">u2")
    assert decode_gray(swapped.tobytes(), "a.IMG")[0][0, 2] != 127


@pytest.mark.parametrize("data,name", [
    (b"\x89PNG\r\n\x1a\n garbage", "bad.png"),
    (encode(GRAY)[:40], "truncated.png"),
    (b"not a jpeg at all", "x.jpeg"),
    (b"\0" * 1000, "short.IMG"),
])
def test_corrupt_bytes_raise_corrupt_image(data, name):
    with pytest.raises(CorruptImage):
        decode_gray(data, name)


def test_jpeg_draft_keeps_the_full_size_and_decodes_smaller():
    big = np.tile(GRAY, (40, 40))  # 480 x 400
    gray, size = decode_gray(encode(big, fmt="JPEG"), "big.jpeg", draft_size=64)
    assert size == (400, 480)
    assert 64 <= min(gray.shape) < 400


def test_resize_and_masks():
    assert resize_gray(GRAY, 32).shape == (32, 32)
    for raw in (np.array([[0, 255], [255, 0]], np.uint8), np.array([[0, 1], [1, 0]], np.uint8)):
        np.testing.assert_array_equal(binarize_mask(raw), [[0, 1], [1, 0]])
    mask = np.zeros((30, 40), np.uint8)
    mask[:, :20] = 1
    small = resize_mask(mask, 8)
    assert set(np.unique(small)) == {0, 1} and small[:, :4].all() and not small[:, 4:].any()


def test_merge_left_and_right_masks_at_another_resolution():
    left = np.zeros((100, 100), np.uint8)
    right = np.zeros((100, 100), np.uint8)
    left[20:80, 10:40] = 1
    right[20:80, 60:90] = 1
    merged = merge_masks([("l.gif", left), ("r.gif", right)], 10)
    np.testing.assert_array_equal(merged, np.maximum(resize_mask(left, 10), resize_mask(right, 10)))
    assert merged[5, 2] == 1 and merged[5, 7] == 1 and merged[5, 5] == 0
    with pytest.raises(MaskMismatch, match="r.gif"):
        merge_masks([("l.gif", left), ("r.gif", right[:50])], 10)


def test_mask_frame_check():
    check_mask_frame((2988, 2698), (1000, 1000), "m.png", "i.png")  # resized copy: accepted
    with pytest.raises(MaskMismatch, match="m.png.*i.png"):
        check_mask_frame((4020, 4892), (4892, 4020), "m.png", "i.png")  # transposed


def dicom_bytes(pixels: np.ndarray, photometric: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_twelve_bit_and_monochrome1_inversion():
    pixels = (GRAY.astype(np.uint16) * 16)
    plain, size = decode_gray(dicom_bytes(pixels, "MONOCHROME2"), "a.dcm")
    assert size == (10, 12) and plain.min() == 0 and plain.max() == 255
    inverted, _ = decode_gray(dicom_bytes(pixels, "MONOCHROME1"), "scan")  # found by its magic
    np.testing.assert_array_equal(inverted, 255 - plain)
