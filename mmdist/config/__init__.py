"""Typed configuration tree: YAML in, validated dataclasses out.

A run is described by one tree of dataclasses (``Config``). It is loaded from a YAML file
(``yaml.safe_load``), optionally inheriting from another file through a top-level ``base:`` key,
then patched by dotted ``key=value`` overrides from the command line. Every key is checked against
the dataclass fields: an unknown key or a value of the wrong type raises ``ConfigError`` naming the
dotted key path (and, for unknown keys, the nearest valid key). Each section validates its own
values in ``__post_init__`` and names the full dotted key itself; a data source, which sits at
several places in the tree, is validated by the section holding it (``SourceConfig.check_at``).

Layout: sections.py (model, data, losses, optim, trainer), data_sources.py (data sources and
the ${MMDIST_DATA} data root), engine.py (engine + DeepSpeed JSON checks), evaluation.py, tree.py
(the root ``Config``), yaml_loader.py (YAML, overrides, coercion), variants.py (the variant
table, the stream names and the saliency rule: a leaf every layer reads).
"""

from mmdist.config.data_sources import (DATA_ROOT_VARIABLE, SourceConfig, SyntheticDomainConfig,
                                        UnlabeledSourceConfig, expand_data_root,
                                        require_data_root)
from mmdist.config.engine import EngineConfig, read_deepspeed_json
from mmdist.config.errors import ConfigError
from mmdist.config.evaluation import IN_DOMAIN_TEST_SETS, CrossDomainSetConfig, EvaluationConfig
from mmdist.config.sections import (AugmentConfig, BudgetConfig, DataConfig, LossConfig,
                                    ModelConfig, OptimConfig, TrainerConfig)
from mmdist.config.tree import Config
from mmdist.config.yaml_loader import (apply_overrides, dump_config, from_dict, load_config,
                                       parse_override, read_yaml_mapping, read_yaml_tree)

__all__ = [
    "AugmentConfig", "BudgetConfig", "Config", "ConfigError", "CrossDomainSetConfig",
    "DATA_ROOT_VARIABLE", "DataConfig", "EngineConfig", "EvaluationConfig", "IN_DOMAIN_TEST_SETS",
    "LossConfig", "ModelConfig", "OptimConfig", "SourceConfig", "SyntheticDomainConfig",
    "TrainerConfig", "UnlabeledSourceConfig", "apply_overrides", "dump_config",
    "expand_data_root", "from_dict", "load_config", "parse_override", "read_deepspeed_json",
    "read_yaml_mapping", "read_yaml_tree", "require_data_root",
]
