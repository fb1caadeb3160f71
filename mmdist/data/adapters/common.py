"""Pieces every adapter shares: the Index it returns, folder checks, image listing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmdist.data.records import DatasetError, Record, check_unique

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".img", ".dcm")


@dataclass
class Index:
    """What an adapter found: the records (in a fixed, sorted order) and counts worth reporting
    (rows filtered out by options, images without masks, ...), copied into the prepare summary."""

    records: list[Record]
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_unique(self.records, "index")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"missing folder: {path} ({what})")
    return path


def list_images(folder: Path, recursive: bool = False,
                suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files in ``folder`` (hidden files skipped), sorted by path."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern
                  if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def by_stem(paths: list[Path], what: str, strip: str = "") -> dict[str, Path]:
    """Map file stem (minus an optional suffix such as '_mask') -> path; a stem twice is an error."""
    out: dict[str, Path] = {}
    for path in paths:
        stem = path.stem
        if strip and stem.endswith(strip):
            stem = stem[: -len(strip)]
        if stem in out:
            raise DatasetError(f"{what}: {out[stem]} and {path} are both named {stem!r}")
        out[stem] = path
    return out


def find_dir(root: Path, names: tuple[str, ...], what: str) -> Path | None:
    """The first folder under ``root`` (root included, breadth first) whose normalised name is in
    ``names`` (lowercase, spaces/underscores/dashes removed); None if there is none."""
    def norm(text: str) -> str:
        return text.lower().replace(" ", "").replace("_", "").replace("-", "")

    wanted = {norm(n) for n in names}
    if norm(root.name) in wanted:
        return root
    level = [root]
    for _ in range(4):
        nxt = []
        for folder in level:
            for child in sorted(folder.iterdir()):
                if child.is_dir() and not child.name.startswith((".", "__MACOSX")):
                    if norm(child.name) in wanted:
                        return child
                    nxt.append(child)
        level = nxt
    return None


def pair_masks(images: dict[str, Path], mask_sets: list[tuple[str, dict[str, Path]]],
               require_all: bool) -> tuple[dict[str, tuple[str, ...]], int]:
    """Pair each image stem with one mask from every set (e.g. left and right lung).

    Returns ({stem: (mask paths...)}, images without masks). A mask whose stem matches no image
    is an error; so is an image with some but not all parts, or (require_all) with none.
    """
    for set_name, masks in mask_sets:
        orphans = sorted(set(masks) - set(images))
        if orphans:
            raise DatasetError(f"mask {masks[orphans[0]]} cannot be matched to an image: no image "
                               f"named {orphans[0]!r} ({len(orphans)} such {set_name} masks)")
    paired: dict[str, tuple[str, ...]] = {}
    without = 0
    for stem, path in images.items():
        parts = [(set_name, masks.get(stem)) for set_name, masks in mask_sets]
        found = [str(p) for _, p in parts if p is not None]
        if len(found) == len(parts):
            paired[stem] = tuple(found)
        elif found:
            have = [set_name for set_name, p in parts if p is not None]
            missing = [set_name for set_name, p in parts if p is None]
            raise DatasetError(f"image {path} has a {', '.join(have)} mask but no "
                               f"{', '.join(missing)} mask")
        elif require_all:
            raise DatasetError(f"image {path} has no mask (looked in the "
                               f"{', '.join(n for n, _ in mask_sets)} folders)")
        else:
            without += 1
    return paired, without


def relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
