"""Two gloo ranks with uneven shards (and a padding duplicate) give the one-process metrics."""

import json
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmdist.evaluation.metrics import (
    PerImageRecords, classification_metrics, segmentation_metrics, segmentation_scores)


def _dataset(n=7, size=24):
    rng = np.random.default_rng(3)
    true = np.zeros((n, size, size), dtype=bool)
    pred = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        t, l = rng.integers(2, 10, size=2)
        true[i, t:t + 10, l:l + 9] = True
        dt, dl = rng.integers(-2, 3, size=2)
        pred[i, t + dt:t + dt + 9, l + dl:l + dl + 10] = True
    p = rng.uniform(size=n)
    probs = np.stack([1 - p, p], axis=1)
    labels = np.array([0, 1, 1, 0, 1, 0, 1])[:n]
    return pred, true, probs, labels


def _evaluate(shards):
    """Score each shard in batches of 2, gather, and compute; the ranks' shards are ``shards``."""
    pred, true, probs, labels = _dataset()
    rank = dist.get_rank() if dist.is_initialized() else 0
    records = PerImageRecords()
    mine = np.asarray(shards[rank], dtype=np.int64)
    for start in range(0, len(mine), 2):
        idx = mine[start:start + 2]
        records.add(idx, prob=probs[idx], label=labels[idx], **segmentation_scores(pred[idx], true[idx]))
    cols = records.gather().columns()
    out = classification_metrics(cols["prob"], cols["label"])
    out.update(segmentation_metrics(cols))
    out["index"] = cols["index"].tolist()
    return out


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        # 4 + 1 padding duplicate of image 0 (as a padding sampler adds) against 3 images
        uneven = _evaluate([[0, 2, 4, 6, 0], [1, 3, 5]])
        # rank 1 sees nothing at all and must still take part in the gather
        lopsided = _evaluate([[0, 1, 2, 3, 4, 5, 6], []])
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"uneven": uneven, "lopsided": lopsided}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_gloo_ranks_equal_one_process(tmp_path):
    single = _evaluate([list(range(7))])
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for case in ("uneven", "lopsided"):
            assert got[case]["index"] == list(range(7))
            for name, value in single.items():
                if name != "index":
                    assert got[case][name] == pytest.approx(value, rel=1e-12), (rank, case, name)
