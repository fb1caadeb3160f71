"""Writers of tiny datasets in the public layouts the adapters read (used by tests/data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data() -> Path:
    import os

    return Path(os.environ.get("MMDIST_SHARED_DATA", SHARED_DATA))


def gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 test picture: a horizontal ramp plus a seeded bright disc."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = (x * 200 / max(width - 1, 1)).astype(np.float64)
    cy, cx = rng.integers(height // 4, 3 * height // 4), rng.integers(width // 4, 3 * width // 4)
    image[(y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) // 6) ** 2] = 250
    return image.astype(np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path, **kwargs)
    return path


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def box_mask(height: int, width: int, top: float, left: float, bottom: float,
             right: float, value: int = 255) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = value
    return mask


def write_kermany(root: Path) -> Path:
    """chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg; person7 is in both source splits."""
    base = root / "chest_xray"
    files = {
        "train/NORMAL": ["IM-0001-0001.jpeg", "IM-0001-0001-0002.jpeg", "NORMAL2-IM-0003-0001.jpeg"],
        "train/PNEUMONIA": ["person7_bacteria_1.jpeg", "person8_virus_2.jpeg", "person9_bacteria_3.jpeg"],
        "test/NORMAL": ["IM-0005-0001.jpeg"],
        "test/PNEUMONIA": ["person7_virus_4.jpeg", "person10_bacteria_5.jpeg"],
    }
    for i, (folder, names) in enumerate(files.items()):
        for j, name in enumerate(names):
            save(base / folder / name, rgb(gradient(60 + 4 * j, 72, seed=10 * i + j)), quality=95)
    (base / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\1")
    return base


def write_jsrt(root: Path, count: int = 2) -> Path:
    """JSRT raw .IMG (2048^2, 12-bit big-endian density) + SCR GIF lung masks at 1024^2."""
    for i in range(1, count + 1):
        stem = f"JPCLN{i:03d}"
        raw = np.zeros((2048, 2048), dtype=">u2")
        raw[:, :1024] = 4095  # dense film = dark: the left half must come out black
        raw[:512, 1024:] = 2048
        (root / "All247images").mkdir(parents=True, exist_ok=True)
        raw.tofile(root / "All247images" / f"{stem}.IMG")
        fold = root / "scratch" / f"fold{i % 2 + 1}" / "masks"
        save(fold / "right lung" / f"{stem}.gif", box_mask(1024, 1024, 0.25, 0.125, 0.75, 0.375), "P")
        save(fold / "left lung" / f"{stem}.gif", box_mask(1024, 1024, 0.25, 0.625, 0.75, 0.875), "P")
        save(fold / "heart" / f"{stem}.gif", box_mask(1024, 1024, 0.5, 0.4, 0.7, 0.6), "P")
    return root


def write_montgomery(root: Path) -> Path:
    """MontgomerySet/CXR_png + ManualMask/{leftMask,rightMask} (one 16-bit image)."""
    base = root / "MontgomerySet"
    for i, (h, w) in enumerate([(100, 80), (80, 100)], start=1):
        stem = f"MCUCXR_{i:04d}_{i % 2}"
        image = gradient(h, w, seed=i)
        if i == 1:
            image16 = (image.astype(np.uint16) * 16 + 100)  # 12-bit values in a 16-bit file
            save(base / "CXR_png" / f"{stem}.png", image16)
        else:
            save(base / "CXR_png" / f"{stem}.png", image)
        save(base / "ManualMask" / "leftMask" / f"{stem}.png", box_mask(h, w, 0.2, 0.55, 0.8, 0.9))
        save(base / "ManualMask" / "rightMask" / f"{stem}.png", box_mask(h, w, 0.2, 0.1, 0.8, 0.45))
    return base


def write_shenzhen(root: Path) -> Path:
    """ChinaSet_AllFiles/CXR_png (RGB, equal channels) + mask/<stem>_mask.png at another size;
    the third image has no mask."""
    base = root / "ChinaSet_AllFiles"
    for i in range(1, 4):
        stem = f"CHNCXR_{i:04d}_{i % 2}"
        save(base / "CXR_png" / f"{stem}.png", rgb(gradient(90, 90, seed=i)))
        if i < 3:
            save(base / "mask" / f"{stem}_mask.png", box_mask(300, 290, 0.1, 0.1, 0.9, 0.5))
    return base


NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
              "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
              "OriginalImagePixelSpacing[x", "y]", ""]
NIH_ROWS = [  # image, findings, follow-up, patient, view
    ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
    ("00000001_001.png", "Cardiomegaly|Pneumonia", 1, 1, "PA"),
    ("00000002_000.png", "No Finding", 0, 2, "PA"),
    ("00000003_000.png", "Pneumonia", 0, 3, "AP"),
    ("00000003_001.png", "No Finding", 1, 3, "AP"),
    ("00000004_000.png", "Effusion|Infiltration", 0, 4, "PA"),
]


def write_nih(root: Path, rows=NIH_ROWS) -> Path:
    """images_001/images/*.png (one RGBA, like a few real ones) + Data_Entry_2017.csv."""
    for i, (name, *_rest) in enumerate(rows):
        folder = root / f"images_00{1 + i // 4}" / "images"
        image = gradient(64, 64, seed=i)
        if i == 1:
            save(folder / name, np.dstack([rgb(image), np.full((64, 64), 255, np.uint8)]))
        else:
            save(folder / name, image)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NIH_HEADER)
        for name, findings, follow, patient, view in rows:
            writer.writerow([name, findings, follow, patient, 50, "M", view, 1024, 1024,
                             0.143, 0.143, ""])
    return root


def write_csv_dataset(root: Path, rows: list[dict] | None = None) -> Path:
    """images/*.png + masks + labels.csv with image, label, patient, left_mask, right_mask."""
    if rows is None:
        rows = []
        for i in range(6):
            name = f"images/im{i}.png"
            save(root / name, gradient(48, 40, seed=i))
            row = {"image": name, "label": ["normal", "pneumonia", "1", ""][i % 4],
                   "patient": f"p{i // 2}" if i < 4 else "", "left_mask": "", "right_mask": ""}
            if i < 3:
                row["left_mask"] = f"masks/l{i}.png"
                row["right_mask"] = f"masks/r{i}.png"
                save(root / row["left_mask"], box_mask(96, 80, 0.1, 0.1, 0.9, 0.45))
                save(root / row["right_mask"], box_mask(96, 80, 0.1, 0.55, 0.9, 0.9))
            rows.append(row)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
