"""The data source keys the real-data layer reads: adapter options and prepare workers."""

import pytest

from mmdist.config import ConfigError, load_config
from mmdist.data.adapters import index_dataset
from mmdist.data.records import DatasetError

from chest_layouts import write_nih


def test_adapter_options_reach_the_adapter(tmp_path):
    write_nih(tmp_path)
    config = load_config(None, ["data.classification.kind=nih",
                                f"data.classification.path={tmp_path}",
                                "data.classification.options={views: [PA], others: drop}",
                                "data.classification.prepare_workers=2"])
    source = config.data.classification
    index = index_dataset(source.kind, source.path, **source.options)
    assert len(index.records) == 2 and source.prepare_workers == 2
    bad = load_config(None, ["data.classification.kind=nih", f"data.classification.path={tmp_path}",
                             "data.classification.options={view: [PA]}"]).data.classification
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['view'\]"):
        index_dataset(bad.kind, bad.path, **bad.options)


@pytest.mark.parametrize("override,message", [
    ("data.classification.options=[PA]", "data.classification.options: must be a mapping"),
    ("data.segmentation.options={views: [PA]}", "data.segmentation.options: kind 'synthetic'"),
    ("data.classification.prepare_workers=0", "data.classification.prepare_workers: must be >= 1"),
])
def test_bad_source_keys_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
