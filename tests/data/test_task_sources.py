"""Training configs that point at real data: a raw folder is prepared on first use, then reused."""

import os
from pathlib import Path

import pytest

from mmdist.config import load_config
from mmdist.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MMDIST_SHARED_DATA", REPO.parent / "shared" / "data"))
SHENZHEN = SHARED / "shenzhen-lungseg"


@pytest.mark.skipif(not (SHENZHEN / "labels.csv").is_file(),
                    reason=f"shared Shenzhen data not found at {SHENZHEN}")
def test_train_on_raw_shenzhen_folder_prepared_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the first-use cache lives under ~/.cache
    overrides = [f"output_dir={tmp_path}/run", "data.segmentation.kind=csv",
                 f"data.segmentation.path={SHENZHEN}", "data.segmentation.prepare_workers=2",
                 "data.budget.segmentation_labeled=10", "trainer.max_steps=2",
                 "trainer.checkpoint_every=0", "trainer.image_log_every=0"]
    summary = Trainer(load_config(REPO / "configs" / "tiny.yaml", overrides)).fit()
    assert summary["steps"] == 2 and 0.0 <= summary["val_dice"] <= 1.0
    caches = list((tmp_path / "home" / ".cache" / "mmdist").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("csv-")
    stamp = {p: p.stat().st_mtime_ns for p in caches[0].rglob("*.npy")}
    Trainer(load_config(REPO / "configs" / "tiny.yaml",
                        overrides[:1] + [f"output_dir={tmp_path}/run2"] + overrides[1:])).fit()
    assert {p: p.stat().st_mtime_ns for p in caches[0].rglob("*.npy")} == stamp  # reused, not redone
