"""Rank shards of a prepared cache's pool: disjoint across global ranks, covering an epoch,
reshuffled from (seed, epoch), one permutation per stream epoch; reading them maps the cache
instead of copying it."""

import pickle

import numpy as np

from chest_layouts import gradient, save
from mmdist.data.cache import load_cache
from mmdist.data.cache_writer import prepare_dataset
from mmdist.data.row_reads import gather_rows
from mmdist.data.sampler import ShardedStream
from mmdist.data.splits import make_split


def cache_pool(tmp_path, count=41):
    for i in range(count):
        save(tmp_path / "pool" / f"im{i:03d}.png", gradient(20, 20, seed=i))
    prepare_dataset("folder", tmp_path / "pool", tmp_path / "cache", size=16, progress=False)
    return load_cache(tmp_path / "cache")


def test_two_rank_shards_are_disjoint_and_cover_an_epoch(tmp_path):
    data = cache_pool(tmp_path)
    pool = make_split(data, "full", 0.1, 0.2, seed=0, need="label").unlabeled  # the unlabeled pool
    assert len(pool) % 2 == 1  # an odd pool: one image is left over each epoch
    streams = [ShardedStream(pool, batch_size=4, seed=7, stream_id=4, rank=r, world_size=2)
               for r in range(2)]
    for epoch in range(3):
        shards = [s.epoch_shard(epoch) for s in streams]
        assert len(shards[0]) == len(shards[1]) == len(pool) // 2
        assert np.intersect1d(shards[0], shards[1]).size == 0
        covered = np.concatenate(shards)
        assert np.isin(covered, pool).all() and len(np.unique(covered)) == len(pool) - 1
    assert not np.array_equal(streams[0].epoch_shard(0), streams[0].epoch_shard(1))  # reshuffled
    # Steps walk through the shard in order: one epoch of batches is exactly the shard.
    per_epoch = streams[1].per_rank // 4
    steps = np.concatenate([streams[1].indices(k) for k in range(per_epoch)])
    np.testing.assert_array_equal(steps, streams[1].epoch_shard(0)[: per_epoch * 4])


def test_global_rank_not_local_rank_decides_the_shard(tmp_path):
    pool = np.arange(40)
    # Two nodes of two GPUs: global ranks 0..3 split the pool four ways ...
    shards = [ShardedStream(pool, 2, 0, 1, rank=g, world_size=4).epoch_shard(0) for g in range(4)]
    assert len(np.unique(np.concatenate(shards))) == 40
    # ... while ranks taken from the local rank would read the same quarter twice.
    local = [ShardedStream(pool, 2, 0, 1, rank=g % 2, world_size=4).epoch_shard(0) for g in range(4)]
    assert len(np.unique(np.concatenate(local))) == 20


def test_reading_a_shard_maps_the_cache_without_copying_it(tmp_path):
    data = cache_pool(tmp_path)
    assert isinstance(data.images, np.memmap) and not data.images.flags.owndata
    stream = ShardedStream(np.arange(len(data)), 5, 0, 1, rank=1, world_size=2)
    batch = gather_rows(data.images, stream.indices(0), 16, nearest=False)
    assert batch.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(batch[:, 0].numpy(), np.asarray(data.images)[stream.indices(0)])


def count_permutations(stream: ShardedStream, monkeypatch) -> list[int]:
    computed = []
    original = stream._permutation

    def counting(epoch):
        computed.append(epoch)
        return original(epoch)

    monkeypatch.setattr(stream, "_permutation", counting)
    return computed


def test_a_stream_permutes_its_pool_once_per_epoch(monkeypatch):
    stream = ShardedStream(np.arange(1000, 1103), batch_size=8, seed=3, stream_id=4, rank=1,
                           world_size=2)  # 51 per rank: batches straddle the epochs' ends
    computed = count_permutations(stream, monkeypatch)
    steps = [stream.indices(step) for step in range(3 * 51 // 8)]
    assert computed == [0, 1, 2]
    # What every step reads is still the epoch's shard, in order.
    np.testing.assert_array_equal(np.concatenate(steps)[:51], stream.epoch_shard(0))
    fresh = ShardedStream(np.arange(1000, 1103), 8, 3, 4, rank=1, world_size=2)
    np.testing.assert_array_equal(fresh.epoch_shard(2), stream.epoch_shard(2))
    # A pickled stream (a batch worker's copy) carries no shards and makes the same ones.
    assert fresh._shards
    copy = pickle.loads(pickle.dumps(fresh))
    assert copy._shards == {}
    for step in (0, 7, 12):
        np.testing.assert_array_equal(copy.indices(step), steps[step])
