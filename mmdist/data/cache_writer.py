"""Prepare a dataset once into a memory-mapped cache (see mmdist.data.cache for the layout).

``prepare_dataset`` indexes the source with its layout adapter, then decodes, converts to 8-bit
grayscale and resizes every image (and merges/resizes its lung masks) in chunks spread over worker
processes. Each worker writes its rows straight into staging arrays under ``<out>/.partial``; the
main process appends a line to a journal once a chunk is on disk, so an interrupted run resumes
where it stopped and never redoes a finished chunk. Rows are placed by record index, so the cache
is the same for any number of workers or chunk order.

A file that cannot be read or decoded is a reject: listed (path and reason) in the manifest and
the summary, left out of the arrays, and the run goes on. Structural problems (see the adapters)
and a mask that cannot be matched to its image stop the run with an error naming the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmdist.data import cache
from mmdist.data.adapters import index_dataset
from mmdist.data.imageset import CLASS_NAMES, NO_LABEL
from mmdist.data.imaging import (CorruptImage, binarize_mask, check_mask_frame, decode_gray,
                                 merge_masks, resize_gray)
from mmdist.data.records import DatasetError, Record

JOURNAL, PLAN = "journal.jsonl", "plan.json"


# ---------------------------------------------------------------------------------------------
# One record, one chunk (these run in the worker processes)
# ---------------------------------------------------------------------------------------------

def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CorruptImage(f"cannot read: {exc.strerror or exc}") from None


def prepare_record(image: str, masks: tuple[str, ...], size: int):
    """Decode one record. Returns (image (size, size) uint8, mask (size, size) uint8 or None,
    meta dict). Raises CorruptImage (a reject) or MaskMismatch (stops the run)."""
    data = _read(image)
    gray, (width, height) = decode_gray(data, image, draft_size=size)
    meta = {"sha1": hashlib.sha1(data).hexdigest(), "width": width, "height": height,
            "mask_sha1": ""}
    mask = None
    if masks:
        parts, hashes = [], []
        for path in masks:
            mask_data = _read(path)
            try:
                mask_gray, _ = decode_gray(mask_data, path)
            except CorruptImage as exc:
                raise CorruptImage(f"mask {path}: {exc}") from None
            check_mask_frame(mask_gray.shape, (height, width), path, image)
            parts.append((path, binarize_mask(mask_gray)))
            hashes.append(hashlib.sha1(mask_data).hexdigest())
        mask = merge_masks(parts, size)
        meta["mask_sha1"] = "+".join(hashes)
    return resize_gray(gray, size), mask, meta


def _prepare_chunk(partial: str, start: int, items: list[tuple[str, tuple[str, ...]]],
                   size: int, with_masks: bool) -> list[dict]:
    images = np.load(Path(partial) / cache.IMAGES, mmap_mode="r+")
    masks = np.load(Path(partial) / cache.MASKS, mmap_mode="r+") if with_masks else None
    metas = []
    for offset, (image, mask_paths) in enumerate(items):
        row = start + offset
        try:
            pixels, mask, meta = prepare_record(image, mask_paths, size)
        except CorruptImage as exc:
            metas.append({"reject": str(exc)})
            continue
        images[row] = pixels
        if masks is not None:
            masks[row] = mask if mask is not None else 0
        meta["reject"] = None
        metas.append(meta)
    images.flush()
    if masks is not None:
        masks.flush()
    return metas


# ---------------------------------------------------------------------------------------------
# Staging, journal, finishing
# ---------------------------------------------------------------------------------------------

def _plan(dataset: str, src: Path, size: int, options: dict, records: list[Record]) -> dict:
    digest = hashlib.sha1()
    for r in records:
        digest.update(json.dumps([r.image, r.label, list(r.masks), r.patient]).encode())
    key = hashlib.sha1(json.dumps([dataset, size, sorted(options.items(), key=str),
                                   digest.hexdigest()], default=str).encode()).hexdigest()
    return {"dataset": dataset, "src": str(src), "size": size, "options": options,
            "records": len(records), "key": key}


def _new_array(path: Path, shape: tuple[int, ...]) -> None:
    tmp = path.with_suffix(".tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    del array
    os.replace(tmp, path)


def _open_partial(partial: Path, plan: dict, size: int, with_masks: bool,
                  chunk_size: int) -> tuple[dict[int, list], int]:
    """Create or reopen the staging folder; return ({chunk: metas} of the finished chunks, the
    chunk size they were cut with: a resumed run keeps the first run's chunks)."""
    plan_file = partial / PLAN
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old.get("key") != plan["key"]:
            raise DatasetError(f"{partial} holds an unfinished prepare of another plan "
                               f"({old.get('dataset')} from {old.get('src')}, size "
                               f"{old.get('size')}, {old.get('records')} records); delete it or "
                               f"choose another output folder")
        chunk_size = int(old["chunk_size"])
    else:
        partial.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps({**plan, "chunk_size": chunk_size}, default=str))
    shape = (plan["records"], size, size)
    if not (partial / cache.IMAGES).is_file():
        _new_array(partial / cache.IMAGES, shape)
    if with_masks and not (partial / cache.MASKS).is_file():
        _new_array(partial / cache.MASKS, shape)
    done: dict[int, list] = {}
    journal = partial / JOURNAL
    if journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption: that chunk is simply redone
            done[entry["chunk"]] = entry["metas"]
    return done, chunk_size


def _journal(partial: Path, chunk: int, metas: list[dict]) -> None:
    with (partial / JOURNAL).open("a") as handle:
        handle.write(json.dumps({"chunk": chunk, "metas": metas}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _relative(path: str, root: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _keep_rows(src: Path, dst: Path, keep: np.ndarray, total: int) -> None:
    """Move a staging array to its final place, leaving out rejected rows."""
    if len(keep) == total:
        os.replace(src, dst)  # the usual case: no copy at all
        return
    staged = np.load(src, mmap_mode="r")
    tmp = dst.with_suffix(".tmp")
    final = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                      shape=(len(keep),) + staged.shape[1:])
    for begin in range(0, len(keep), 1024):
        final[begin:begin + 1024] = staged[keep[begin:begin + 1024]]
    final.flush()
    del final, staged
    os.replace(tmp, dst)


def _finish(out: Path, partial: Path, plan: dict, records: list[Record], metas: list[dict],
            with_masks: bool, notes: dict) -> dict:
    rejected = [i for i, m in enumerate(metas) if m["reject"] is not None]
    rejects = [{"path": records[i].image, "reason": metas[i]["reject"]} for i in rejected]
    keep = np.array([i for i, m in enumerate(metas) if m["reject"] is None], dtype=np.int64)
    if len(keep) == 0:
        raise DatasetError(f"every one of the {len(records)} images was rejected (staging kept in "
                           f"{partial}); first: {rejects[0]['path']}: {rejects[0]['reason']}")
    kept = [records[i] for i in keep]
    has_mask = np.array([r.has_mask for r in kept], dtype=bool)
    with_masks = with_masks and bool(has_mask.any())
    _keep_rows(partial / cache.IMAGES, out / cache.IMAGES, keep, len(records))
    if with_masks:
        _keep_rows(partial / cache.MASKS, out / cache.MASKS, keep, len(records))
        np.save(out / cache.HAS_MASK, has_mask)
    labels = np.array([r.label for r in kept], dtype=np.int64)
    np.save(out / cache.LABELS, labels)
    rows = ([new, r.name, metas[i]["sha1"], r.label, r.patient, metas[i]["width"],
             metas[i]["height"], "|".join(_relative(m, plan["src"]) for m in r.masks),
             metas[i]["mask_sha1"]]
            for new, (i, r) in enumerate(zip(keep, kept)))
    counts = {name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)}
    counts["unlabeled"] = int((labels == NO_LABEL).sum())
    summary = {
        "dataset": plan["dataset"], "source": records[0].source,
        "src": plan["src"], "out": str(out), "size": plan["size"], "options": plan["options"],
        "plan": plan["key"], "records": len(kept), "indexed": len(records),
        "rejects": rejects, "labels": counts, "with_mask": int(has_mask.sum()),
        "patients": len({r.patient for r in kept if r.patient}), "notes": notes,
    }
    cache.write_manifest(out, rows, summary)
    shutil.rmtree(partial)
    return {"format": cache.FORMAT, **summary}


# ---------------------------------------------------------------------------------------------
# Entry
# ---------------------------------------------------------------------------------------------

def prepare_dataset(dataset: str, src: str | Path, out: str | Path, size: int = 256,
                    workers: int = 1, chunk_size: int = 256, progress: bool = True,
                    **options) -> dict:
    """Prepare ``src`` (a ``dataset`` layout: kermany, jsrt, montgomery, shenzhen, nih, csv,
    folder) into the cache folder ``out`` at ``size`` x ``size``; options go to the adapter.

    Returns the summary (also saved as out/manifest.json) plus 'seconds', 'chunks',
    'chunks_reused' and 'reused' (True when ``out`` already held this very cache).
    """
    if size < 8:
        raise DatasetError(f"prepare: size must be >= 8, got {size}")
    if workers < 1 or chunk_size < 1:
        raise DatasetError(f"prepare: workers and chunk_size must be >= 1, got {workers}, "
                           f"{chunk_size}")
    start_time = time.perf_counter()
    src, out = Path(src), Path(out)
    index = index_dataset(dataset, src, **options)
    records = index.records
    plan = _plan(dataset, src, size, options, records)
    out.mkdir(parents=True, exist_ok=True)
    # Every rank of a job may reach this on first use: one prepares, the others wait, then reuse.
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare_locked(dataset, out, plan, index, size, workers, chunk_size, progress,
                               start_time)


def _prepare_locked(dataset: str, out: Path, plan: dict, index, size: int, workers: int,
                    chunk_size: int, progress: bool, start_time: float) -> dict:
    records = index.records
    if cache.is_cache(out):
        summary = cache.read_summary(out)
        if summary.get("plan") != plan["key"]:
            raise DatasetError(f"{out} already holds another cache ({summary.get('dataset')} from "
                               f"{summary.get('src')}, size {summary.get('size')}); delete it or "
                               f"choose another output folder")
        return {**summary, "reused": True, "chunks_reused": None,
                "seconds": round(time.perf_counter() - start_time, 3)}
    with_masks = any(r.has_mask for r in records)
    partial = out / cache.PARTIAL
    done, chunk_size = _open_partial(partial, plan, size, with_masks, chunk_size)
    starts = list(range(0, len(records), chunk_size))
    todo = [c for c in range(len(starts)) if c not in done]
    bar = tqdm(total=len(records), initial=sum(len(m) for m in done.values()), unit="img",
               desc=f"prepare {dataset}", disable=not progress, dynamic_ncols=True)

    def job(c: int) -> tuple:
        items = [(r.image, r.masks) for r in records[starts[c]:starts[c] + chunk_size]]
        return (str(partial), starts[c], items, size, with_masks)

    with bar:
        if workers == 1:
            for c in todo:
                done[c] = _prepare_chunk(*job(c))
                _journal(partial, c, done[c])
                bar.update(len(done[c]))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_prepare_chunk, *job(c)): c for c in todo}
                pending = set(futures)
                try:
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for future in finished:
                            c = futures[future]
                            done[c] = future.result()  # re-raises a worker's MaskMismatch
                            _journal(partial, c, done[c])
                            bar.update(len(done[c]))
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    decoded = sum(len(done[c]) for c in todo)
    metas = [m for c in range(len(starts)) for m in done[c]]
    summary = _finish(out, partial, plan, records, metas, with_masks, index.notes)
    seconds = time.perf_counter() - start_time
    return {**summary, "reused": False, "chunks": len(starts),
            "chunks_reused": len(starts) - len(todo), "seconds": round(seconds, 3),
            "images_per_second": round(decoded / max(seconds, 1e-9), 2)}
