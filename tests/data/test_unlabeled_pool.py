"""data.unlabeled: an unlabeled classification pool from its own source, read only by the variants
with unlabeled streams, counted as the epoch by every variant, and kept patient-disjoint from a
cross-domain test set drawn from the same dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from chest_layouts import NIH_ROWS, write_nih
from mmdist.augment.step_source import build_step_source
from mmdist.config import ConfigError, load_config
from mmdist.config.variants import CLS_STRONG, CLS_WEAK, VARIANTS
from mmdist.data.cache import load_cache
from mmdist.data.cache_writer import prepare_dataset
from mmdist.data.imageset import NO_LABEL
from mmdist.data.records import DatasetError
from mmdist.data.splits import shared_patients
from mmdist.data.task_data import build_task_data, check_source_paths, epoch_pool
from mmdist.data.unlabeled import load_pool
from mmdist.engine.trainer import Trainer
from mmdist.evaluation.evaluate import build_test_sets

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
SMALL = ["data.image_size=32", "data.classification.count=40", "data.segmentation.count=20"]
SYNTHETIC_POOL = "data.unlabeled={kind: synthetic, count: 50, holdout_fraction: 0.2}"
FIT = ["trainer.max_steps=2", "trainer.checkpoint_every=0", "trainer.image_log_every=0",
       "trainer.log_every=0"]


def nih_rows(patients: int = 12):
    """A larger NIH layout: three images per patient (pneumonia, no finding, another finding)."""
    rows = []
    for p in range(1, patients + 1):
        for k, findings in enumerate(("Pneumonia", "No Finding", "Effusion")):
            rows.append((f"{p:08d}_{k:03d}.png", findings, k, p, "PA"))
    return rows


@pytest.fixture
def home(tmp_path, monkeypatch):
    """First-use caches of raw folders go under this HOME (~/.cache/mmdist)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home" / ".cache" / "mmdist"


def test_the_pool_feeds_the_unlabeled_streams_with_its_labels_hidden(tmp_path):
    config = load_config(TINY, [SYNTHETIC_POOL, f"output_dir={tmp_path}/run", *FIT])
    data = build_task_data(config, VARIANTS["multimix"].tasks)
    task, pool = data.classification, data.unlabeled_pool
    offset = config.data.classification.count
    assert len(task.imageset) == offset + 50 and len(pool.train) + len(pool.holdout) == 50
    assert len(pool.holdout) == 10 and not set(pool.train) & set(pool.holdout)
    np.testing.assert_array_equal(task.split.unlabeled, pool.train + offset)
    assert (np.asarray(task.imageset.labels)[offset:] == NO_LABEL).all()  # never trained on
    assert task.split.labeled.max() < offset and task.split.test.max() < offset
    # The stacked rows are the pool's own pixels.
    np.testing.assert_array_equal(task.imageset.images[pool.train[:3] + offset],
                                  pool.imageset.images[pool.train[:3]])
    source = build_step_source(config, data, VARIANTS["multimix"].streams)
    for stream in (CLS_WEAK, CLS_STRONG):
        np.testing.assert_array_equal(source.samplers[stream].pool, task.split.unlabeled)
    assert source.batch(0).cls_unlabeled_weak.shape[0] == config.data.batch_size
    # One epoch is the pool's training images, whatever the variant reads.
    assert epoch_pool(config, data).images == len(pool.train) == 40
    summary = Trainer(config).fit()
    assert summary["steps"] == 2 and summary["steps_per_epoch"] == 40 // config.data.batch_size


def test_variants_without_unlabeled_streams_never_load_the_pool(tmp_path, home):
    write_nih(tmp_path / "nih", nih_rows())
    pool = [f"data.unlabeled={{kind: nih, path: {tmp_path / 'nih'}}}"]
    for variant in ("unet", "enc", "umtl", "umtl_s"):
        config = load_config(TINY, [*pool, f"model.variant={variant}"])
        data = build_task_data(config, VARIANTS[variant].tasks)
        assert data.unlabeled_pool is None and not home.exists(), variant
    for variant in ("enc_mm", "enc_ssl", "umtl_ssl", "multimix"):
        config = load_config(TINY, [*pool, f"model.variant={variant}"])
        data = build_task_data(config, VARIANTS[variant].tasks)
        assert len(data.unlabeled_pool.train) == 36, variant
    assert len(list(home.iterdir())) == 1  # prepared once, then reused
    epochs = {v: epoch_pool(load_config(TINY, [*pool, f"model.variant={v}"])).images
              for v in ("unet", "enc", "multimix")}
    assert set(epochs.values()) == {36}


def test_a_cross_domain_set_from_the_pool_dataset_is_patient_disjoint_from_it(tmp_path, home):
    write_nih(tmp_path / "nih", nih_rows())
    nih = tmp_path / "nih"
    overrides = [f"data.unlabeled={{kind: nih, path: {nih}, holdout_fraction: 0.25}}",
                 "evaluation.cross_domain=[{name: nihx, task: classification, kind: nih, "
                 f"path: {nih}, options: {{others: drop}}, exclude: unlabeled}}]"]
    config = load_config(TINY, [*SMALL, *overrides])
    (nihx,) = [s for s in build_test_sets(config, VARIANTS["multimix"]) if s.name == "nihx"]
    pool = load_pool(config)
    patients = set(np.asarray(nihx.imageset.patients)[nihx.indices])
    assert patients and not patients & set(np.asarray(pool.imageset.patients)[pool.train])
    assert patients == set(np.asarray(pool.imageset.patients)[pool.holdout])
    assert len(nihx.indices) == 2 * len(patients)  # each held-out patient's two labeled images
    assert shared_patients(pool.imageset, pool.train, pool.holdout) == set()
    # The supervised encoder never reads the pool and is scored on the same images.
    enc = load_config(TINY, [*SMALL, *overrides, "model.variant=enc"])
    (enc_nihx,) = [s for s in build_test_sets(enc, VARIANTS["enc"]) if s.name == "nihx"]
    np.testing.assert_array_equal(enc_nihx.indices, nihx.indices)

    # Without the exclusion the shared patients are refused, never scored.
    shared = load_config(TINY, [*SMALL, overrides[0], overrides[1].replace("unlabeled}]", "none}]")])
    with pytest.raises(DatasetError, match=r"nihx.*patients of the unlabeled pool.*exclude"):
        build_test_sets(shared, VARIANTS["multimix"])
    # ... and with no patient held out nothing is left to score.
    everything = load_config(TINY, [*SMALL, overrides[0].replace("0.25", "0.0"), overrides[1]])
    with pytest.raises(DatasetError, match="holdout_fraction"):
        build_test_sets(everything, VARIANTS["multimix"])


def test_exclude_needs_a_pool_and_the_pool_needs_a_classifier_source():
    with pytest.raises(ConfigError, match=r"evaluation.cross_domain\[0\].exclude"):
        load_config(TINY, ["evaluation.cross_domain=[{name: x, task: classification, "
                           "exclude: unlabeled}]"])
    with pytest.raises(ConfigError, match="data.unlabeled"):
        load_config(TINY, [SYNTHETIC_POOL, "model.variant=unet", "data.classification=null"])
    with pytest.raises(ConfigError, match="data.unlabeled.holdout_fraction"):
        load_config(TINY, ["data.unlabeled={kind: synthetic, holdout_fraction: 0.95}"])


def test_a_pool_prepared_at_another_size_is_refused_naming_the_key(tmp_path):
    write_nih(tmp_path / "nih", NIH_ROWS)
    prepare_dataset("nih", tmp_path / "nih", tmp_path / "nih-32", size=32, progress=False)
    config = load_config(TINY, [f"data.unlabeled={{kind: cache, path: {tmp_path / 'nih-32'}}}"])
    with pytest.raises(DatasetError, match=r"data.unlabeled: nih images are 32 px.* 64 px"):
        build_task_data(config, ("classification",))
    missing = load_config(TINY, [f"data.unlabeled={{kind: cache, path: {tmp_path / 'none'}}}"])
    with pytest.raises(DatasetError, match=r"data.unlabeled.path: cache dataset folder not found"):
        check_source_paths(missing)


def test_the_joined_pool_travels_to_workers_as_file_references(tmp_path):
    write_nih(tmp_path / "nih", nih_rows(40))
    prepare_dataset("nih", tmp_path / "nih", tmp_path / "nih-64", size=64, progress=False)
    config = load_config(TINY, [f"data.unlabeled={{kind: cache, path: {tmp_path / 'nih-64'}}}"])
    task = build_task_data(config, ("classification",)).classification
    pool = load_cache(tmp_path / "nih-64").images
    blob = pickle.dumps(task.imageset)
    in_memory = task.imageset.images.parts[0].nbytes  # the built-in classification images
    assert len(blob) < in_memory + pool.nbytes / 4, (len(blob), in_memory, pool.nbytes)
    copy = pickle.loads(blob).images
    assert isinstance(copy.parts[1], np.memmap)
    rows = task.split.unlabeled[[0, -1]]
    np.testing.assert_array_equal(copy[rows], task.imageset.images[rows])
