"""A sweep's spec without a cluster: the grid expanded into cells in distinct folders, overrides
on every cell, errors naming the file and key, and cells whose values a variant never reads
sharing one run (which keys a variant ignores comes from the variant table)."""

from __future__ import annotations

import dataclasses

import pytest

from slurm_cluster import REPO
from test_sweep import write_spec

import mmdist.launch.sweep_spec as sweep_spec
from mmdist.config import ConfigError
from mmdist.launch.sweep_spec import cell_name, ignored_keys, load_spec

PAPER_SPEC = REPO / "configs" / "sweeps" / "paper_table2.yaml"
TINY_SPEC = REPO / "configs" / "sweeps" / "tiny.yaml"
CLS, SEG = "data.budget.classification_labeled", "data.budget.segmentation_labeled"


def test_paper_grid_has_405_cells_in_distinct_folders(tmp_path):
    spec = load_spec(REPO / "configs" / "sweeps" / "paper_table2.yaml", tmp_path)
    assert len(spec.cells) == 9 * 9 * 5
    assert len({run.run_dir for run in spec.runs}) == len(spec.runs)
    run = next(r for r in spec.runs if r.name == "multimix_cfull_s50_seed3")
    assert run.config_tree["data"]["budget"] == {**run.config_tree["data"]["budget"],
                                                 "classification_labeled": "full",
                                                 "segmentation_labeled": 50}
    assert run.config_tree["seed"] == 3 and run.run_dir == tmp_path / run.name
    assert spec.slurm.gpus_per_node == 1 and spec.slurm.array_parallelism == 32
    assert spec.evaluate == "plots"


def test_cell_names_and_overrides_apply_to_every_cell(tmp_path):
    assert cell_name({"model.variant": "unet", "optim.lr": 0.001, "seed": 2}) == "unet_lr-0.001_seed2"
    spec = load_spec(TINY_SPEC, tmp_path, ["trainer.max_steps=3"])
    assert [c.name for c in spec.cells] == ["multimix_seed0", "multimix_seed1", "umtl_seed0",
                                            "umtl_seed1"]
    assert [r.name for r in spec.runs] == [c.name for c in spec.cells]  # nothing to share
    assert all(r.config_tree["trainer"]["max_steps"] == 3 for r in spec.runs)
    assert all(r.config_tree["trainer"]["threads"] == 1 for r in spec.runs)


@pytest.mark.parametrize("text, message", [
    ("grid: {seed: [0, 0]}\n", "grid.seed: repeats a value"),
    ("grid: {seed: []}\n", "grid.seed: must be a non-empty list"),
    ("gird: {seed: [0]}\n", "gird: unknown key"),
    ("grid: {model.variant: [multimix, nope]}\n", "cell nope: model.variant: unknown variant"),
    ("grid: {seed: [0]}\nslurm: {array_paralelism: 2}\n", "slurm.array_paralelism: unknown key"),
    ("grid: {seed: [0]}\nslurm: {nodes: 0}\n", "nodes: must be >= 1"),
    ("grid: {seed: [0]}\nevaluate: yes\n", "evaluate: True is not one of"),
    ("grid: {seed: [0]}\nestimate: {seconds_per_step: 0}\n",
     "estimate.seconds_per_step: must be a number > 0"),
    ("grid: {seed: [0]}\nestimate: {seconds: 1}\n",
     "estimate: must be {seconds_per_step: S, seconds_per_step_packed: S_K}"),
    ("grid: {seed: [0]}\nestimate: {seconds_per_step_packed: 1}\n",
     "estimate.seconds_per_step_packed: prices slurm.runs_per_gpu > 1"),
    ("grid: {seed: [0]}\noverrides: {output_dir: /tmp/x}\n", "overrides.output_dir: a sweep sets"),
])
def test_bad_specs_name_the_file_and_key(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_spec(path, tmp_path / "out")
    assert str(path) in str(error.value) and message in str(error.value)


def test_paper_grid_trains_285_runs_for_its_405_cells(tmp_path):
    spec = load_spec(PAPER_SPEC, tmp_path)
    assert (len(spec.cells), len(spec.runs)) == (405, 285)
    assert len({run.run_dir for run in spec.runs}) == 285
    by_name = {run.name: run for run in spec.runs}
    # U-Net reads no classification budget: one run per (mask budget, seed), trained at the
    # grid's first |D_l^c|, standing for all three.
    unet = by_name["unet_c100_s50_seed3"]
    assert unet.cells == ["unet_c100_s50_seed3", "unet_c1000_s50_seed3", "unet_cfull_s50_seed3"]
    assert unet.config_tree["data"]["budget"]["classification_labeled"] == 100
    assert unet.config_tree["data"]["budget"]["segmentation_labeled"] == 50
    assert unet.run_dir == tmp_path / "unet_c100_s50_seed3"
    for variant in ("enc", "enc_mm", "enc_ssl"):  # no decoder: no mask budget
        assert by_name[f"{variant}_cfull_s10_seed0"].cells == [
            f"{variant}_cfull_s{s}_seed0" for s in (10, 50, "full")]
    shared = {run.config_tree["model"]["variant"] for run in spec.runs if len(run.cells) > 1}
    assert shared == {"unet", "enc", "enc_mm", "enc_ssl"}
    assert sum(len(run.cells) for run in spec.runs) == 405
    cells = {cell.name: cell.run for cell in spec.cells}
    assert cells["unet_cfull_sfull_seed4"] == "unet_c100_sfull_seed4"
    assert cells["multimix_cfull_sfull_seed4"] == "multimix_cfull_sfull_seed4"
    # Loading again (a resubmission) gives the same runs in the same folders.
    again = load_spec(PAPER_SPEC, tmp_path)
    assert [(r.name, r.config_tree) for r in again.runs] == [
        (r.name, r.config_tree) for r in spec.runs]


def test_which_keys_a_variant_ignores_comes_from_the_variant_table(monkeypatch):
    keys = [CLS, SEG, "data.classification.count", "seed"]
    assert ignored_keys("unet", keys) == [CLS]
    assert ignored_keys("enc_ssl", keys) == [SEG]
    assert ignored_keys("multimix", keys) == []
    # A variant table in which umtl lost its decoder: its mask budgets collapse, U-Net's stay.
    table = dict(sweep_spec.VARIANTS,
                 umtl=dataclasses.replace(sweep_spec.VARIANTS["umtl"], decoder=False))
    monkeypatch.setattr(sweep_spec, "VARIANTS", table)
    spec = load_spec(PAPER_SPEC, "/tmp/unused")
    variants = {r.config_tree["model"]["variant"] for r in spec.runs if len(r.cells) > 1}
    assert variants == {"unet", "enc", "enc_mm", "enc_ssl", "umtl"}
