"""The real-data recipes in configs/paper/: they load with $MMDIST_DATA pointing anywhere, stop with
one line naming the key and the variable when it is unset, and build and train on the publishers'
layouts prepared with the README's commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chest_layouts import shared_data, write_jsrt, write_kermany, write_montgomery, write_nih
from mmdist import prepare, train
from mmdist.bench.fidelity import ARMS, RECIPE
from mmdist.config import DATA_ROOT_VARIABLE, load_config
from mmdist.config.variants import VARIANTS
from mmdist.data.records import DatasetError
from mmdist.data.task_data import build_task_data, check_source_paths
from mmdist.data.unlabeled import load_pool
from mmdist.engine.trainer import Trainer
from mmdist.evaluation.evaluate import build_test_sets
from mmdist.launch.sweep_spec import load_spec

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper"
RECIPES = sorted(PAPER.glob("*.yaml"))
# One step of a quarter-width model on the prepared caches, read at 64 px.
ONE_STEP = ["trainer.max_steps=1", "trainer.max_epochs=null", "model.width=0.25",
            "data.image_size=64", "data.global_batch_size=4", "data.workers=0",
            "trainer.val_every=0", "trainer.checkpoint_every=0", "trainer.image_log_every=0",
            "trainer.log_every=0", "trainer.threads=1", "trainer.progress=false",
            "engine.device=cpu", "data.budget.classification_labeled=2",
            "data.budget.segmentation_labeled=1"]


def sources(config):
    named = [config.data.classification, config.data.segmentation, config.data.unlabeled]
    return [s for s in named + list(config.evaluation.cross_domain) if s is not None]


def test_the_recipes_and_the_paper_grid_read_their_data_under_one_variable(tmp_path, monkeypatch):
    assert {p.name for p in RECIPES} >= {"in_domain.yaml", "nih_pool.yaml", "subset.yaml"}
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(tmp_path / "prepared"))
    for path in RECIPES:
        config = load_config(path)
        assert all(Path(s.path).parent == tmp_path / "prepared" for s in sources(config)), path
        # The reference schedule: 10 images per stream, Adam 1e-4 x0.1, counted in epochs.
        assert config.data.global_batch_size == 10 and config.optim.lr == 1e-4
        assert config.optim.lr_gamma == 0.1
        assert config.trainer.max_steps is None and config.trainer.max_epochs >= 1
    paper = load_config(PAPER / "in_domain.yaml")
    assert paper.data.image_size == 256 and paper.trainer.max_epochs == 100
    assert paper.optim.lr_step_epochs == 8
    assert {e.name: e.task for e in paper.evaluation.cross_domain} == {
        "montgomery": "segmentation", "nih": "classification"}
    nih = load_config(PAPER / "nih_pool.yaml")
    assert nih.data.unlabeled.holdout_fraction > 0
    assert [e.exclude for e in nih.evaluation.cross_domain if e.name == "nih"] == ["unlabeled"]
    spec = load_spec(REPO / "configs" / "sweeps" / "paper_table2.yaml", tmp_path / "sweep")
    assert len(spec.runs) == 285
    assert {r.config_tree["data"]["classification"]["path"] for r in spec.runs} == {
        str(tmp_path / "prepared" / "kermany-256")}


def test_an_unset_variable_is_named_with_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    config = load_config(PAPER / "in_domain.yaml")  # loads: a sweep can still be listed
    assert config.data.classification.path == "$MMDIST_DATA/kermany-256"
    for action in (check_source_paths, lambda c: build_task_data(c, ("classification",))):
        with pytest.raises(DatasetError, match=r"^data.classification.path: .*MMDIST_DATA"):
            action(config)
    code = train.main(["--config", str(PAPER / "in_domain.yaml"), f"output_dir={tmp_path}/run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "data.classification.path" in err and "export MMDIST_DATA=" in err


def nih_layout(root: Path) -> Path:
    """NIH with 12 patients of three images each (pneumonia, no finding, another finding)."""
    rows = [(f"{p:08d}_{k:03d}.png", finding, k, p, "PA") for p in range(1, 13)
            for k, finding in enumerate(("Pneumonia", "No Finding", "Effusion"))]
    return write_nih(root, rows)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """$MMDIST_DATA with the caches the recipes name, prepared by the README's commands from small
    copies of each publisher's layout."""
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("prepared")
    layouts = {"kermany": write_kermany(raw / "kermany"), "jsrt": write_jsrt(raw / "jsrt", 4),
               "montgomery": write_montgomery(raw / "montgomery"),
               "nih": nih_layout(raw / "nih")}
    for dataset, src in layouts.items():
        code = prepare.main(["--dataset", dataset, "--src", str(src), "--out",
                             str(out / f"{dataset}-256"), "--size", "256", "--no-progress"])
        assert code == 0, dataset
    return out


@pytest.mark.parametrize("recipe", ["in_domain", "nih_pool"])
def test_a_recipe_builds_trains_and_finds_its_test_sets(recipe, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(prepared))
    config = load_config(PAPER / f"{recipe}.yaml", [*ONE_STEP, f"output_dir={tmp_path}/run"])
    check_source_paths(config)
    trainer = Trainer(config)
    assert trainer.fit()["steps"] == 1
    assert trainer.task_data.classification.imageset.source == "kermany"
    assert trainer.task_data.segmentation.imageset.source == "jsrt"
    sets = {s.name: s for s in build_test_sets(config, VARIANTS["multimix"])}
    assert {"kermany", "jsrt", "montgomery", "nih"} <= set(sets)  # named by their dataset
    assert len(sets["montgomery"].indices) == 2
    nih = sets["nih"]
    if recipe == "in_domain":  # the whole NIH set: every pneumonia or no-finding image
        assert len(nih.indices) == 24 and trainer.task_data.unlabeled_pool is None
    else:  # NIH is the pool: scored only on the held-out patients
        pool = load_pool(config)
        offset = trainer.task_data.classification.imageset.meta["pool_offset"]
        read = trainer.source.samplers["cls_unlabeled_weak"].pool
        assert np.array_equal(read, pool.train + offset)
        tested = set(np.asarray(nih.imageset.patients)[nih.indices])
        assert tested and not tested & set(np.asarray(pool.imageset.patients)[pool.train])
        assert trainer.plan.steps_per_epoch == max(1, len(pool.train) // 4)


SUBSET = shared_data()
need_subset = pytest.mark.skipif(
    not all((SUBSET / name / "labels.csv").is_file() for name in
            ("kermany-pneumonia-224", "shenzhen-lungseg", "montgomery-lungseg")),
    reason=f"the Kermany, Shenzhen and Montgomery samples are not at {SUBSET}")


@need_subset
def test_the_subset_recipe_names_the_sample_folders(monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(SUBSET))
    config = load_config(PAPER / "subset.yaml")
    check_source_paths(config)
    assert config.data.image_size == 224 and config.data.classification.kind == "csv"


@need_subset
@pytest.mark.slow
def test_the_subset_recipe_trains_a_step(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_VARIABLE, str(SUBSET))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # first-use caches
    config = load_config(PAPER / "subset.yaml", [*ONE_STEP, f"output_dir={tmp_path}/run",
                                                  "data.image_size=224"])
    trainer = Trainer(config)
    assert trainer.fit()["steps"] == 1
    assert len(trainer.task_data.classification.imageset) == 5216
    sets = {s.name: s for s in build_test_sets(config, VARIANTS["multimix"])}
    assert len(sets["montgomery"].indices) == 13


def test_the_plus_recipe_is_the_arm_the_fidelity_benchmark_measured(monkeypatch):
    """configs/paper/plus.yaml must stay the benchmark's `multimix appearance` arm: the README's
    figures for the recipe are that arm's."""
    monkeypatch.setenv(DATA_ROOT_VARIABLE, "/prepared")
    plus = load_config(PAPER / "plus.yaml").to_dict()
    measured = load_config(RECIPE, ARMS["multimix appearance"]).to_dict()
    assert plus.pop("output_dir") != measured.pop("output_dir")
    assert plus == measured
    assert plus["data"]["augment"]["seg_appearance"] is True
