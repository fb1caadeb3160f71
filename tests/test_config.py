"""Config: YAML + dotted overrides -> typed tree; bad keys and values name the key."""

from pathlib import Path

import pytest
import yaml

from mmdist.config import ConfigError, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def test_every_shipped_config_loads():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 12  # default, tiny, learn, demo and the nine variants
    for path in files:
        config = load_config(path)
        assert config.data.image_size % 32 == 0, path


@pytest.mark.parametrize("variant", ["unet", "enc", "enc_mm", "enc_ssl", "umtl", "umtl_s",
                                     "umtl_ssl", "umtl_ssl_s", "multimix"])
def test_one_config_per_paper_variant(variant):
    assert load_config(CONFIGS / f"{variant}.yaml").model.variant == variant


def test_user_facing_keys_and_overrides():
    config = load_config(CONFIGS / "tiny.yaml", ["model.variant=umtl_s", "model.saliency=differentiable",
                                                  "trainer.max_steps=3", "output_dir=/tmp/x", "seed=7",
                                                  "optim.lr=0.5"])
    assert (config.model.variant, config.model.saliency) == ("umtl_s", "differentiable")
    assert (config.trainer.max_steps, config.output_dir, config.seed) == (3, "/tmp/x", 7)
    assert config.optim.lr == 0.5
    assert config.data.image_size == 64  # from tiny.yaml, itself based on default.yaml
    assert config.losses.lambda_d == 5.0  # inherited from default.yaml


def test_unknown_key_names_path_and_nearest_key():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "tiny.yaml", ["trainer.max_step=3"])
    message = str(info.value)
    assert "trainer.max_step" in message and "trainer.max_steps" in message


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  variant: multimix\n  saliencey: detached\n")
    with pytest.raises(ConfigError, match=r"model\.saliencey.*model\.saliency"):
        load_config(path)


@pytest.mark.parametrize("override, key", [
    ("trainer.max_steps=ten", "trainer.max_steps"),
    ("trainer.max_steps=2.5", "trainer.max_steps"),
    ("model.width=wide", "model.width"),
    ("model.saliency=sometimes", "model.saliency"),
    ("trainer.progress=3", "trainer.progress"),
    ("data=5", "data"),
])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "tiny.yaml", [override])
    assert str(info.value).startswith(key)


@pytest.mark.parametrize("override, key", [
    ("data.image_size=100", "data.image_size"),
    ("model.variant=unetx", "model.variant"),
    ("losses.tau=1.5", "losses.tau"),
    ("data.budget.segmentation_labeled=0", "data.budget.segmentation_labeled"),
    ("data.classification.domain.gamma=-1", "data.classification.domain.gamma"),
])
def test_invalid_value_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "tiny.yaml", [override])
    assert str(info.value).startswith(key), str(info.value)


def test_saliency_on_a_variant_without_bridge_parts_is_refused():
    with pytest.raises(ConfigError, match="model.saliency"):
        load_config(CONFIGS / "tiny.yaml", ["model.variant=unet", "model.saliency=detached"])


def test_the_saliency_rule_is_one_rule_for_config_and_model():
    """'auto' resolves through the variant table, and the model refuses a bridge on a variant
    without both heads with the config's own error, from the one rule in mmdist.config.variants."""
    from mmdist.config.variants import VARIANTS, resolve_saliency
    from mmdist.model import MultiMixNet

    bridged = {name for name, spec in VARIANTS.items() if spec.bridge}
    assert bridged == {"umtl_s", "umtl_ssl_s", "multimix"}
    for name in VARIANTS:
        config = load_config(CONFIGS / "tiny.yaml", [f"model.variant={name}"])
        expected = "detached" if name in bridged else "none"
        assert config.model.resolved_saliency == resolve_saliency(name, "auto") == expected
        assert MultiMixNet(name, "auto", width=0.125).saliency_mode == expected
    with pytest.raises(ConfigError, match="^model.saliency: variant 'enc'"):
        MultiMixNet("enc", "differentiable", width=0.125)


def test_sections_built_directly_name_their_full_key():
    """The data sections that live at one path name it themselves, without the loader's help."""
    from mmdist.config import AugmentConfig, BudgetConfig

    with pytest.raises(ConfigError, match="^data.budget.classification_labeled: "):
        BudgetConfig(classification_labeled=0)
    with pytest.raises(ConfigError, match="^data.budget.test_fraction: "):
        BudgetConfig(test_fraction=0.6)
    with pytest.raises(ConfigError, match="^data.augment.strong_ops: "):
        AugmentConfig(strong_ops=0)
    with pytest.raises(ConfigError, match="^data.augment.pad_fraction: "):
        AugmentConfig(pad_fraction=0.9)


def test_sources_name_the_full_key_of_where_they_sit():
    """A source section is validated by the section holding it, so its errors name the full key
    (the loader passes them through untouched); the same checks at every place a source sits."""
    cases = [
        ("data.segmentation.domain.noise=-1", "data.segmentation.domain.noise"),
        ("data.classification.count=3", "data.classification.count"),
        ("data.segmentation.prepare_workers=0", "data.segmentation.prepare_workers"),
        ("evaluation.cross_domain=[{name: a, kind: synthetic, count: 40}, "
         "{name: b b, kind: synthetic}]", r"evaluation.cross_domain\[1\].name"),
        ("evaluation.cross_domain=[{name: a, kind: shenzhen}]", r"evaluation.cross_domain\[0\].path"),
        ("evaluation.cross_domain=[{name: a, domain: {gamma: 0}}]",
         r"evaluation.cross_domain\[0\].domain.gamma"),
        # names clash across the list: the first entry whose name is taken
        ("evaluation.cross_domain=[{name: b}, {name: a}, {name: a}]",
         r"evaluation.cross_domain\[1\].name"),
        ("evaluation.cross_domain=[{name: classification}]", r"evaluation.cross_domain\[0\].name"),
    ]
    for override, key in cases:
        with pytest.raises(ConfigError, match=f"^{key}: "):
            load_config(CONFIGS / "tiny.yaml", [override])
    from mmdist.config import DataConfig, SourceConfig

    with pytest.raises(ConfigError, match="^data.classification.options: "):
        DataConfig(classification=SourceConfig(options={"csv": "x.csv"}))


def test_config_validates_without_importing_the_model():
    """Loading and validating a config imports no layer above config (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys; from mmdist.config import load_config; "
            f"load_config({str(CONFIGS / 'tiny.yaml')!r}, ['model.variant=umtl_s']); "
            "print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('mmdist.') and m.count('.') >= 1}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['config']", out


def test_resolved_config_round_trips(tmp_path):
    config = load_config(CONFIGS / "tiny.yaml", ["data.budget.classification_labeled=full"])
    dump_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["budget"][
        "classification_labeled"] == "full"
    assert load_config(tmp_path / "config.yaml") == config


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")


def test_exponent_without_dot_is_a_float():
    # PyYAML (YAML 1.1) reads 1e-4 as text; float keys accept it anyway.
    assert load_config(CONFIGS / "tiny.yaml", ["optim.lr=1e-4"]).optim.lr == 1e-4
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(CONFIGS / "tiny.yaml", ["optim.lr=fast"])


@pytest.mark.parametrize("written", ["$MMDIST_DATA/kermany-256", "${MMDIST_DATA}/kermany-256"])
def test_source_paths_expand_the_data_root_variable(written, tmp_path, monkeypatch):
    monkeypatch.setenv("MMDIST_DATA", str(tmp_path))
    config = load_config(CONFIGS / "tiny.yaml", ["data.classification.kind=cache",
                                                 f"data.classification.path={written}"])
    assert config.data.classification.path == f"{tmp_path}/kermany-256"
    # Only that variable: a longer name is not it, and nothing else is expanded.
    other = load_config(CONFIGS / "tiny.yaml", ["data.segmentation.kind=cache",
                                                "data.segmentation.path=$MMDIST_DATASET/x"])
    assert other.data.segmentation.path == "$MMDIST_DATASET/x"


def test_segmentation_split_fractions_fall_back_and_are_checked():
    budget = load_config(CONFIGS / "tiny.yaml").data.budget
    assert budget.fractions("segmentation") == budget.fractions("classification") == (0.1, 0.2)
    jsrt = load_config(CONFIGS / "tiny.yaml", ["data.budget.segmentation_test_fraction=0.49"])
    assert jsrt.data.budget.fractions("segmentation") == (0.1, 0.49)
    with pytest.raises(ConfigError, match="^data.budget.segmentation_val_fraction"):
        load_config(CONFIGS / "tiny.yaml", ["data.budget.segmentation_val_fraction=0.7"])


def test_unlabeled_pool_keys_are_checked():
    with pytest.raises(ConfigError, match=r"data.unlabeled.holdout_fractoin.*holdout_fraction"):
        load_config(CONFIGS / "tiny.yaml", ["data.unlabeled={kind: synthetic, holdout_fractoin: 0.1}"])
    with pytest.raises(ConfigError, match="^data.unlabeled.path: kind 'nih' needs a dataset path"):
        load_config(CONFIGS / "tiny.yaml", ["data.unlabeled={kind: nih}"])


def test_run_length_on_the_command_line_wins_over_the_file(tmp_path):
    """A recipe that counts epochs takes trainer.max_steps=N (and one that counts steps takes
    trainer.max_epochs=N) without a second override; both in one file, or both on the command
    line, stay an error."""
    recipe = CONFIGS / "paper" / "subset.yaml"
    assert load_config(recipe).trainer.max_epochs == 100
    steps = load_config(recipe, ["trainer.max_steps=20"]).trainer
    assert (steps.max_steps, steps.max_epochs) == (20, None)
    epochs = load_config(CONFIGS / "tiny.yaml", ["trainer.max_epochs=2"]).trainer
    assert (epochs.max_steps, epochs.max_epochs) == (None, 2)
    with pytest.raises(ConfigError, match=r"trainer.max_steps \(20\) and trainer.max_epochs \(3\)"):
        load_config(recipe, ["trainer.max_steps=20", "trainer.max_epochs=3"])
    both = tmp_path / "both.yaml"
    both.write_text("trainer:\n  max_steps: 20\n  max_epochs: 3\n")
    with pytest.raises(ConfigError, match="are both set"):
        load_config(both)
    # null on the command line changes nothing else: the file's epochs stay
    assert load_config(recipe, ["trainer.max_steps=null"]).trainer.max_epochs == 100
