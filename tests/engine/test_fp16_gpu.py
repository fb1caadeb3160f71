"""fp16 on a GPU (DeepSpeed and torch refuse fp16 autocast training on a CPU): DeepSpeed ZeRO-0's
autocast GradScaler backs off on a skipped step, and its scale survives a checkpoint round trip
(DeepSpeed's own checkpoint lacks it, so every resume restarted at 2**16); the one-process
strategy reads the scale once per step and counts the skip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmdist.config import EngineConfig
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.checkpointer import Checkpointer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]


def _step(strategy, model, poison: bool) -> bool:
    x = torch.randn(4, 8, device=strategy.device)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x).float().pow(2).mean()
    if poison:
        loss = loss * float("inf")  # an overflow as fp16 makes it
    return strategy.backward_step(loss)


def _parts(strategy, run_dir) -> Checkpointer:
    saver = Checkpointer(run_dir, strategy, keep=2)
    for name, (part, options) in strategy.checkpoint_parts().items():
        saver.register(name, part, **options)
    return saver


def test_single_gpu_fp16_skips_backs_off_and_counts(tmp_path):
    from mmdist.engine.single import SingleProcessStrategy

    strategy = SingleProcessStrategy(EngineConfig(device="cuda", precision="fp16"))
    model = torch.nn.Linear(8, 8)
    wrapped = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    assert _step(strategy, wrapped, poison=False)
    before = strategy.scaler.get_scale()
    assert not _step(strategy, wrapped, poison=True)
    assert strategy.scaler.get_scale() == before / 2 and strategy.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_deepspeed_zero0_fp16_scale_backs_off_and_survives_a_resume(tmp_path):
    from mmdist.engine.deepspeed_strategy import DeepSpeedStrategy
    from mmdist.engine.distributed import RankInfo, free_port

    info = RankInfo(0, 1, 0, "127.0.0.1", free_port(), "test")
    config = EngineConfig(strategy="deepspeed", device="cuda", precision="fp16",
                          deepspeed_config=str(REPO / "configs/deepspeed/zero0.json"))
    strategy = DeepSpeedStrategy(config, info=info)
    model = torch.nn.Linear(8, 8)
    engine = strategy.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    assert _step(strategy, engine, poison=False)
    start = strategy._autocast_scaler().get_scale()
    assert not _step(strategy, engine, poison=True)
    backed_off = strategy._autocast_scaler().get_scale()
    assert backed_off == start / 2 and strategy.skipped_steps == 1
    _parts(strategy, tmp_path).save(2)

    other = torch.nn.Linear(8, 8)
    strategy.setup(other, torch.optim.Adam(other.parameters(), lr=1e-3))
    assert strategy._autocast_scaler().get_scale() == 2.0**16  # a fresh engine starts over
    latest = strategy.latest_checkpoint(tmp_path)
    _parts(strategy, tmp_path).restore(ckpt.load_checkpoint(latest), latest)
    assert strategy._autocast_scaler().get_scale() == backed_off
    assert strategy.skipped_steps == 1
    strategy.close()
