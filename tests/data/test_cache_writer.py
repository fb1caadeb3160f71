"""prepare_dataset / python -m mmdist.prepare: caches from every layout, rejects, resume,
determinism, and the memory-mapped load."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mmdist.data.cache_writer as cache_writer
from chest_layouts import (box_mask, gradient, save, write_csv_dataset, write_jsrt, write_kermany,
                           write_montgomery, write_nih, write_shenzhen)
from mmdist.data import cache
from mmdist.data.cache import load_cache
from mmdist.data.cache_writer import prepare_dataset
from mmdist.data.imageset import NO_LABEL
from mmdist.data.records import DatasetError

REPO = Path(__file__).resolve().parents[2]


def prep(kind, src, out, **kw):
    kw.setdefault("progress", False)
    return prepare_dataset(kind, src, out, **kw)


def test_jsrt_cache_is_inverted_and_masks_merged(tmp_path):
    write_jsrt(tmp_path / "jsrt")
    summary = prep("jsrt", tmp_path / "jsrt", tmp_path / "out", size=64)
    assert summary["records"] == 2 and summary["with_mask"] == 2 and summary["rejects"] == []
    data = load_cache(tmp_path / "out")
    assert isinstance(data.images, np.memmap) and isinstance(data.masks, np.memmap)
    assert data.images.shape == (2, 64, 64) and data.masks.shape == (2, 64, 64)
    image, mask = np.asarray(data.images[0]), np.asarray(data.masks[0])
    assert image[40:, :30].max() == 0 and image[40:, 34:].min() == 255  # dense half is dark
    expected = np.zeros((64, 64), np.uint8)
    expected[16:48, 8:24] = 1   # right lung box (1024-px GIF, merged)
    expected[16:48, 40:56] = 1  # left lung box
    np.testing.assert_array_equal(mask, expected)
    assert data.meta["has_mask"].all() and list(data.meta["original_size"][0]) == [2048, 2048]
    assert list(data.names) == ["All247images/JPCLN001.IMG", "All247images/JPCLN002.IMG"]
    assert (data.labels == NO_LABEL).all() and data.source == "jsrt"


def test_montgomery_sixteen_bit_and_transposed_mask(tmp_path):
    base = write_montgomery(tmp_path)
    data = load_cache(prep("montgomery", base, tmp_path / "out", size=32)["out"])
    from mmdist.data.imaging import resize_gray
    picture = gradient(100, 80, seed=1).astype(np.float64)  # written as 16 * value + 100
    stretched = np.rint(picture * 255 / picture.max()).astype(np.uint8)
    np.testing.assert_array_equal(data.images[0], resize_gray(stretched, 32))
    assert data.masks[0][:, :3].max() == 0 and data.masks[0][16, 8] == 1
    save(base / "ManualMask" / "leftMask" / "MCUCXR_0001_1.png", box_mask(80, 100, 0, 0, 1, 1))
    with pytest.raises(DatasetError, match=r"leftMask/MCUCXR_0001_1.png \(100x80\) cannot be matched"):
        prep("montgomery", base, tmp_path / "out2", size=32)


def test_shenzhen_partial_masks_recorded_in_has_mask(tmp_path):
    base = write_shenzhen(tmp_path)
    summary = prep("shenzhen", base, tmp_path / "out", size=32)
    data = load_cache(tmp_path / "out")
    assert summary["with_mask"] == 2
    assert data.meta["has_mask"].tolist() == [True, True, False]
    assert data.masks[0].any() and not data.masks[2].any()


def test_nih_kermany_and_csv_labels_and_patients(tmp_path):
    write_nih(tmp_path / "nih")
    data = load_cache(prep("nih", tmp_path / "nih", tmp_path / "n", size=32)["out"])
    assert data.labels.tolist() == [NO_LABEL, 1, 0, 1, 0, NO_LABEL]
    assert data.patients.tolist() == ["1", "1", "2", "3", "3", "4"] and data.masks is None
    write_kermany(tmp_path / "k")
    summary = prep("kermany", tmp_path / "k", tmp_path / "kc", size=32)
    assert summary["labels"] == {"normal": 4, "pneumonia": 5, "unlabeled": 0}
    assert summary["patients"] == 7  # person7 twice, IM-0001-0001 twice
    write_csv_dataset(tmp_path / "c")
    data = load_cache(prep("csv", tmp_path / "c", tmp_path / "cc", size=32)["out"])
    assert data.labels.tolist() == [0, 1, 1, NO_LABEL, 0, 1]
    assert data.meta["has_mask"].tolist() == [True, True, True, False, False, False]


def corrupt_pool(root: Path) -> list[Path]:
    """A folder pool of 7 images, 3 of them corrupt in different ways; returns the corrupt ones."""
    for i in range(4):
        save(root / f"good{i}.png", gradient(40, 50, seed=i))
    truncated = root / "truncated.png"
    truncated.write_bytes((root / "good0.png").read_bytes()[:60])
    garbage = root / "garbage.jpeg"
    garbage.write_bytes(b"\xff\xd8 this is not a jpeg")
    empty = root / "sub" / "empty.png"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    return [garbage, empty, truncated]


def test_corrupt_files_are_listed_not_dropped_and_the_run_goes_on(tmp_path):
    bad = corrupt_pool(tmp_path / "pool")
    summary = prep("folder", tmp_path / "pool", tmp_path / "out", size=16, chunk_size=2)
    assert summary["records"] == 4 and summary["indexed"] == 7
    assert sorted(r["path"] for r in summary["rejects"]) == sorted(str(p) for p in bad)
    assert all(r["reason"] for r in summary["rejects"])
    manifest = json.loads((tmp_path / "out" / cache.MANIFEST_JSON).read_text())
    assert manifest["rejects"] == summary["rejects"]
    data = load_cache(tmp_path / "out")
    assert list(data.names) == [f"good{i}.png" for i in range(4)]
    from mmdist.data.imaging import resize_gray
    np.testing.assert_array_equal(data.images[2], resize_gray(gradient(40, 50, seed=2), 16))


def test_a_corrupt_mask_rejects_its_image(tmp_path):
    base = write_shenzhen(tmp_path)
    (base / "mask" / "CHNCXR_0001_1_mask.png").write_bytes(b"broken")
    summary = prep("shenzhen", base, tmp_path / "out", size=16)
    assert [r["path"] for r in summary["rejects"]] == [str(base / "CXR_png" / "CHNCXR_0001_1.png")]
    assert "mask" in summary["rejects"][0]["reason"] and "CHNCXR_0001_1_mask.png" in summary["rejects"][0]["reason"]
    assert summary["records"] == 2


def test_every_image_rejected_is_an_error(tmp_path):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "a.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="every one of the 1 images was rejected"):
        prep("folder", tmp_path / "pool", tmp_path / "out")


def read_cache_bytes(out: Path) -> dict:
    return {name: (out / name).read_bytes() for name in
            (cache.IMAGES, cache.MASKS, cache.HAS_MASK, cache.LABELS, cache.MANIFEST_CSV)
            if (out / name).exists()}


def test_output_does_not_depend_on_workers_or_chunks(tmp_path):
    write_csv_dataset(tmp_path / "c")
    corrupt_pool(tmp_path / "c" / "extra")  # unlisted files: ignored by the csv adapter
    one = prep("csv", tmp_path / "c", tmp_path / "one", size=24, workers=1, chunk_size=4)
    two = prep("csv", tmp_path / "c", tmp_path / "two", size=24, workers=2, chunk_size=1)
    assert one["chunks"] == 2 and two["chunks"] == 6
    assert read_cache_bytes(tmp_path / "one") == read_cache_bytes(tmp_path / "two")


def test_an_interrupted_prepare_resumes_without_redoing_chunks(tmp_path, monkeypatch):
    bad = corrupt_pool(tmp_path / "pool")
    reference = prep("folder", tmp_path / "pool", tmp_path / "ref", size=16)
    calls = []
    real_chunk = cache_writer._prepare_chunk

    def interrupted(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does to a long run
        calls.append(args[1])
        return real_chunk(*args)

    monkeypatch.setattr(cache_writer, "_prepare_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep("folder", tmp_path / "pool", tmp_path / "out", size=16, chunk_size=2)
    assert not cache.is_cache(tmp_path / "out")
    assert len((tmp_path / "out" / cache.PARTIAL / "journal.jsonl").read_text().splitlines()) == 2
    calls.clear()
    monkeypatch.setattr(cache_writer, "_prepare_chunk",
                        lambda *a: calls.append(a[1]) or real_chunk(*a))
    # Resumed with another chunk size: the first run's chunks are kept.
    summary = prep("folder", tmp_path / "pool", tmp_path / "out", size=16, chunk_size=5)
    assert calls == [4, 6] and summary["chunks_reused"] == 2  # rows 0-3 were not decoded again
    assert len(summary["rejects"]) == len(bad)
    assert read_cache_bytes(tmp_path / "out") == read_cache_bytes(tmp_path / "ref")
    assert not (tmp_path / "out" / cache.PARTIAL).exists()
    again = prep("folder", tmp_path / "pool", tmp_path / "out", size=16, chunk_size=2)
    assert again["reused"] is True and again["records"] == reference["records"]
    with pytest.raises(DatasetError, match="already holds another cache"):
        prep("folder", tmp_path / "pool", tmp_path / "out", size=32)


def test_a_killed_prepare_process_resumes(tmp_path):
    """SIGKILL to the CLI and its workers mid-run (no handler runs): the rerun reuses every chunk
    the journal recorded and ends with the cache a fresh run makes. The last six images are
    36-megapixel PNGs (small files, slow to decode), so the kill lands mid-run on any machine."""
    from PIL import Image

    for i in range(34):
        save(tmp_path / "pool" / f"im{i:02d}.png", gradient(300, 300, seed=i))
    for i in range(6):
        Image.new("L", (6000, 6000), 40 * i).save(tmp_path / "pool" / f"zz{i}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mmdist.prepare", "--dataset", "folder", "--src",
               str(tmp_path / "pool"), "--out", str(out), "--size", "32", "--workers", "2",
               "--chunk-size", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / cache.PARTIAL / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: the CLI and its workers
    process.wait()
    done_before = len(journal.read_text().splitlines()) if journal.exists() else 0
    assert not cache.is_cache(out), "the run finished before the kill"
    assert 3 <= done_before < 40
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["chunks_reused"] >= done_before and summary["records"] == 40
    fresh = prep("folder", tmp_path / "pool", tmp_path / "fresh", size=32)
    assert fresh["records"] == 40
    assert read_cache_bytes(out) == read_cache_bytes(tmp_path / "fresh")


def test_unfinished_staging_of_another_plan_is_not_overwritten(tmp_path):
    write_csv_dataset(tmp_path / "c")
    partial = tmp_path / "out" / cache.PARTIAL
    partial.mkdir(parents=True)
    (partial / "plan.json").write_text(json.dumps({"key": "other", "dataset": "nih",
                                                    "chunk_size": 4}))
    with pytest.raises(DatasetError, match="unfinished prepare of another plan"):
        prep("csv", tmp_path / "c", tmp_path / "out")
    with pytest.raises(DatasetError, match="unfinished prepare is there: run it again to resume"):
        load_cache(tmp_path / "out")


def test_cli_prints_a_json_summary_last_and_names_errors(tmp_path):
    corrupt_pool(tmp_path / "pool")
    command = [sys.executable, "-m", "mmdist.prepare", "--dataset", "folder", "--src",
               str(tmp_path / "pool"), "--out", str(tmp_path / "out"), "--size", "16"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 4 and len(summary["rejects"]) == 3 and summary["seconds"] >= 0
    assert "prepare folder" in result.stderr  # the progress bar
    command[6] = str(tmp_path / "missing")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "missing" in result.stderr and "does not exist" in result.stderr
    command[6] = str(tmp_path / "pool")
    result = subprocess.run(command + ["--option", "views=[PA]"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown option(s) ['views']" in result.stderr


def test_ranks_preparing_one_cache_at_once_wait_and_reuse(tmp_path):
    for i in range(12):
        save(tmp_path / "pool" / f"im{i:02d}.png", gradient(64, 64, seed=i))
    command = [sys.executable, "-m", "mmdist.prepare", "--dataset", "folder", "--src",
               str(tmp_path / "pool"), "--out", str(tmp_path / "out"), "--size", "16",
               "--chunk-size", "2", "--no-progress"]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    summaries = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1])
                 for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sorted(s["reused"] for s in summaries) == [False, True]
    assert load_cache(tmp_path / "out").images.shape == (12, 16, 16)
