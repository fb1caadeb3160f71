"""Where a raw folder is prepared on first use: $MMDIST_CACHE (else ~/.cache/mmdist), keyed by
the source's content, so one folder named two ways is one cache and a relabelled one another."""

import os

from chest_layouts import write_csv_dataset
from mmdist.config.data_sources import SourceConfig
from mmdist.data.source_imageset import default_cache_dir, load_imageset


def _source(path, **options):
    return SourceConfig(kind="csv", path=str(path), options=options)


def test_the_cache_goes_where_mmdist_cache_says(tmp_path, monkeypatch):
    data = write_csv_dataset(tmp_path / "data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMDIST_CACHE", raising=False)
    assert default_cache_dir(_source(data), 32).parent == tmp_path / "home" / ".cache" / "mmdist"
    monkeypatch.setenv("MMDIST_CACHE", str(tmp_path / "scratch"))
    assert default_cache_dir(_source(data), 32).parent == tmp_path / "scratch"
    load_imageset(_source(data), 32, "segmentation")
    assert [p.parent for p in (tmp_path / "scratch").glob("*/manifest.json")] == \
        [default_cache_dir(_source(data), 32)]
    assert not (tmp_path / "home").exists()


def test_one_folder_named_three_ways_is_one_cache_and_relabelling_makes_another(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("MMDIST_CACHE", str(tmp_path / "cache"))
    data = write_csv_dataset(tmp_path / "data")
    os.symlink(data, tmp_path / "link")
    names = [data, tmp_path / "data" / ".." / "data", tmp_path / "link", data / "labels.csv"]
    dirs = {default_cache_dir(_source(name), 32) for name in names}
    assert len(dirs) == 1
    for name in names:  # each prepares or reuses the one cache
        imageset = load_imageset(_source(name), 32, "segmentation")
        assert len(imageset) == 6
    assert len(list((tmp_path / "cache").iterdir())) == 1
    # new patient ids in labels.csv: another content, another cache (the old one stays valid)
    text = (data / "labels.csv").read_text().replace(",p0,", ",patient-0,")
    (data / "labels.csv").write_text(text)
    assert default_cache_dir(_source(data), 32) not in dirs
    assert load_imageset(_source(data), 32, "segmentation").patients[0] == "patient-0"
