"""Prepare and read benchmarks of the real-data layer (``python -m mmdist.bench prepare``).

1. prepare: ``python -m mmdist.prepare`` on a generated pool of large grayscale PNGs (NIH-like:
   1024x1024, 8-bit, noisy enough to compress like radiographs); images/s, wall time, peak
   resident memory of the whole process tree, and the same figures extrapolated to the 112,120
   images of ChestX-ray14.
2. read: training-time reading of the same images through a torch DataLoader, from the cache
   versus decoding and resizing the PNGs on the fly (same workers, batch and order; same run).
3. readers: one training reader (load_cache, split, a rank's shard of a whole epoch through
   mmdist.data.sampler) over caches of 20k and 100k images, in fresh processes: anonymous
   (private) resident memory must stay flat; file-backed pages are the shared page cache.
Generated data live under --workdir (default /tmp) and are removed unless --keep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

NIH_IMAGES = 112_120


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=5000, help="PNGs in the generated pool")
    parser.add_argument("--distinct", type=int, default=1000,
                        help="distinct generated pictures in the pool (the rest are copies)")
    parser.add_argument("--source-size", type=int, default=1024, help="PNG width and height")
    parser.add_argument("--size", type=int, default=256, help="cache image size")
    parser.add_argument("--workers", type=int, default=2, help="prepare processes")
    parser.add_argument("--read-images", type=int, default=2000,
                        help="images read in each arm of the read comparison")
    parser.add_argument("--read-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reader-pools", default="20000,100000",
                        help="comma-separated cache sizes for the reader memory test ('' = skip)")
    parser.add_argument("--workdir", default="/tmp/mmdist-bench-prepare")
    parser.add_argument("--keep", action="store_true", help="keep the generated pool and caches")


# ------------------------------------------------------------------------------ generated pool

def _radiograph(index: int, size: int) -> np.ndarray:
    """A (size, size) uint8 chest-like picture: smooth anatomy, two dark lungs, sensor noise."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = 150 + 40 * np.sin(3 * x + rng.uniform(0, 6)) * np.cos(2 * y + rng.uniform(0, 6))
    for cx in (0.3, 0.7):
        lung = ((x - cx - rng.uniform(-0.03, 0.03)) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
        body[lung] -= 70
    body += rng.normal(0, 4, (size, size)).astype(np.float32)
    return np.clip(body, 0, 255).astype(np.uint8)


def _write_pngs(args: tuple) -> None:
    from PIL import Image

    folder, indices, size = args
    for i in indices:
        # Level 1: generating the pool is not what is measured; decoding speed barely depends on it.
        Image.fromarray(_radiograph(i, size)).save(Path(folder) / f"{i:06d}.png", compress_level=1)


def make_pool(folder: Path, count: int, size: int, workers: int, distinct: int) -> None:
    """``count`` PNGs in ``folder``: ``distinct`` generated pictures, then byte copies of them
    (separate files: every one is read and decoded; encoding them all would take longer than
    the benchmark itself on a small machine)."""
    marker = folder / f".complete-{count}-{size}-{distinct}"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    distinct = min(distinct, count)
    chunks = [(str(folder), range(i, min(i + 50, distinct)), size) for i in range(0, distinct, 50)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_pngs, chunks))
    for i in range(distinct, count):
        shutil.copyfile(folder / f"{i % distinct:06d}.png", folder / f"{i:06d}.png")
    marker.touch()


# ------------------------------------------------------------------------------------- memory

def _tree_rss(process) -> tuple[float, float]:
    """(total RSS, total anonymous RSS) in MiB of a process and its descendants."""
    import psutil

    total = anon = 0.0
    try:
        tree = [process] + process.children(recursive=True)
    except psutil.Error:  # the command ended between the poll and this read: nothing to add
        return 0.0, 0.0
    for proc in tree:
        try:
            info = proc.memory_info()
            total += info.rss
            anon += info.rss - info.shared
        except psutil.Error:
            pass
    return total / 2**20, anon / 2**20


def run_sampled(command: list[str]) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run ``command``; return (result, seconds, peak tree RSS MiB, peak tree private RSS MiB)."""
    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks = [0.0, 0.0]

    def sample() -> None:
        try:
            process = psutil.Process(child.pid)
        except psutil.Error:  # already ended (and reaped)
            return
        while child.poll() is None:
            total, anon = _tree_rss(process)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], anon)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.join()
    result = subprocess.CompletedProcess(command, child.returncode, stdout, "")
    return result, time.perf_counter() - start, peaks[0], peaks[1]


def _status_mb() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def read_epoch(path: str, world: int = 2, rank: int = 0, batch: int = 10) -> dict:
    """One training reader: map the cache, split it, read this rank's whole epoch shard."""
    from mmdist.data.cache import load_cache
    from mmdist.data.splits import make_split
    from mmdist.data.row_reads import gather_rows
    from mmdist.data.sampler import ShardedStream

    start = _status_mb()
    data = load_cache(path)
    split = make_split(data, "full", 0.1, 0.2, seed=0, need="label")
    stream = ShardedStream(split.unlabeled, batch, seed=0, stream_id=4, rank=rank, world_size=world)
    loaded = _status_mb()
    tick = time.perf_counter()
    steps = stream.per_rank // batch
    checksum = 0
    for step in range(steps):
        checksum += int(gather_rows(data.images, stream.indices(step), data.size, False)[:, 0, 0, 0].sum())
    seconds = time.perf_counter() - tick
    end = _status_mb()
    return {"pool": len(data), "images_read": steps * batch, "read_img_per_s": steps * batch / seconds,
            "anon_mb_start": start["RssAnon"], "anon_mb_loaded": loaded["RssAnon"],
            "anon_mb_end": end["RssAnon"], "file_mb_end": end["RssFile"], "rss_mb_peak": end["VmHWM"],
            "checksum": checksum}


def make_flat_cache(out: Path, count: int, size: int) -> None:
    """A cache of ``count`` images without decoding anything (for the reader memory test)."""
    from mmdist.data import cache

    if cache.is_cache(out):
        return
    out.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out / cache.IMAGES, mode="w+", dtype=np.uint8,
                                       shape=(count, size, size))
    block = np.random.default_rng(0).integers(0, 256, (1000, size, size), dtype=np.uint8)
    for begin in range(0, count, len(block)):
        images[begin:begin + len(block)] = block[: count - begin]
    images.flush()
    del images
    np.save(out / cache.LABELS, np.full(count, -1, dtype=np.int64))
    rows = ([i, f"gen/{i:06d}.png", "", -1, f"p{i // 3}", size, size, "", ""] for i in range(count))
    cache.write_manifest(out, rows, {"dataset": "generated", "source": "generated",
                                     "records": count, "size": size, "with_mask": 0, "rejects": []})


# ---------------------------------------------------------------------------------------- read

def _loader_rate(dataset, count: int, workers: int, batch: int) -> float:
    import torch

    order = np.random.default_rng(0).permutation(len(dataset))[:count].tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=order,
                                         num_workers=workers)
    tick = time.perf_counter()
    seen = sum(len(b) for b in loader)
    return seen / (time.perf_counter() - tick)


class _CacheImages:
    def __init__(self, path: str):
        self.path, self.images = path, None

    def __len__(self) -> int:
        from mmdist.data.cache import load_cache
        return len(load_cache(self.path))

    def __getitem__(self, i):
        import torch
        if self.images is None:  # mapped lazily in each worker, never copied
            from mmdist.data.cache import load_cache
            self.images = load_cache(self.path).images
        return torch.from_numpy(np.array(self.images[i]))


class _PngImages:
    def __init__(self, files: list[str], size: int):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        import torch
        from PIL import Image
        with Image.open(self.files[i]) as image:
            gray = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(gray).copy())


# ----------------------------------------------------------------------------------------- run

def run(args) -> dict:
    work = Path(args.workdir)
    pool, out = work / "pool", work / "cache"
    tick = time.perf_counter()
    make_pool(pool, args.images, args.source_size, max(args.workers, 1), args.distinct)
    generate_s = time.perf_counter() - tick
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "mmdist.prepare", "--dataset", "folder", "--src", str(pool),
               "--out", str(out), "--size", str(args.size), "--workers", str(args.workers),
               "--no-progress"]
    result, seconds, peak_mb, peak_private_mb = run_sampled(command)
    if result.returncode != 0:
        raise SystemExit(f"prepare failed ({result.returncode}): {result.stdout[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    rate = summary["records"] / seconds
    report = {
        "pool_images": args.images, "pool_distinct": min(args.distinct, args.images),
        "pool_source_size": args.source_size,
        "pool_mb": round(sum(f.stat().st_size for f in pool.glob("*.png")) / 2**20, 1),
        "pool_generate_s": round(generate_s, 1), "size": args.size, "workers": args.workers,
        "prepare_s": round(seconds, 2), "prepare_img_per_s": round(rate, 1),
        "prepare_peak_rss_mb_tree": round(peak_mb, 1),
        "prepare_peak_private_mb_tree": round(peak_private_mb, 1),
        "prepare_rejects": len(summary["rejects"]),
        "nih_extrapolated_hours": round(NIH_IMAGES / rate / 3600, 2),
        "nih_extrapolated_hours_per_worker_count": {
            w: round(NIH_IMAGES / (rate / args.workers * w) / 3600, 2) for w in (1, 8, 32)},
        "nih_cache_gb": round(NIH_IMAGES * args.size ** 2 / 1e9, 2),
    }
    count = min(args.read_images, args.images)
    files = sorted(str(p) for p in pool.glob("*.png"))
    cache_rate = _loader_rate(_CacheImages(str(out)), count, args.read_workers, args.batch)
    png_rate = _loader_rate(_PngImages(files, args.size), count, args.read_workers, args.batch)
    report.update({"read_images": count, "read_workers": args.read_workers,
                   "read_cache_img_per_s": round(cache_rate, 1),
                   "read_png_img_per_s": round(png_rate, 1),
                   "read_cache_over_png": round(cache_rate / png_rate, 1)})
    readers = {}
    for n in [int(v) for v in args.reader_pools.split(",") if v.strip()]:
        path = work / f"flat-{n}"
        make_flat_cache(path, n, args.size)
        code = ("import json,sys; from mmdist.bench.prepare import read_epoch; "
                "print(json.dumps(read_epoch(sys.argv[1])))")
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, check=True)
        readers[n] = json.loads(done.stdout.strip().splitlines()[-1])
    if readers:
        report["readers"] = {n: {k: (round(v, 1) if isinstance(v, float) else v)
                                 for k, v in r.items() if k != "checksum"}
                             for n, r in readers.items()}
    # Other work on the machine slows every arm alike; say how busy it was.
    report["cpus"], report["load_average_1m_end"] = os.cpu_count(), round(os.getloadavg()[0], 2)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report
