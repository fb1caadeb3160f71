"""The weight average: its arithmetic on a hand-computed case, its place in the training loop
(updated after every step taken, never after an fp16-skipped one) and in the checkpoints."""

from pathlib import Path

import pytest
import torch
from torch import nn

from mmdist.config import ConfigError, load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.ema import ModelEMA, warmup_decay
from mmdist.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([0.0, 1.0], dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0))


def test_warmup_decay_schedule():
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.5, 7) == pytest.approx(8 / 17)
    assert warmup_decay(0.5, 8) == 0.5 and warmup_decay(0.5, 1000) == 0.5


def test_update_arithmetic_by_hand():
    live = Tiny()
    ema = ModelEMA(live, decay=0.5, device="cpu")
    with torch.no_grad():
        live.weight.copy_(torch.tensor([10.0, 20.0]))
        live.count.fill_(7)
    ema.update(live)  # d_0 = 0.1: 0.1 * [0, 1] + 0.9 * [10, 20]
    assert ema.module.weight.tolist() == pytest.approx([9.0, 18.1], rel=1e-12)
    assert int(ema.module.count) == 7  # buffers are copied, not averaged
    with torch.no_grad():
        live.weight.zero_()
    ema.update(live)  # d_1 = 2/11
    assert ema.module.weight.tolist() == pytest.approx([9.0 * 2 / 11, 18.1 * 2 / 11], rel=1e-12)
    assert ema.updates == 2
    # The live network is untouched, and the average takes no gradients.
    assert live.weight.tolist() == [0.0, 0.0]
    assert not any(p.requires_grad for p in ema.module.parameters())

    restored = ModelEMA(Tiny(), decay=0.5, device="cpu")
    restored.load_state_dict(ema.state_dict())
    for a, b in ((ema, live), (restored, live)):
        with torch.no_grad():
            b.weight.fill_(4.0)
        a.update(b)
    assert torch.equal(restored.module.weight, ema.module.weight) and restored.updates == 3


def test_ema_decay_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="model.ema_decay"):
        load_config(TINY, ["model.ema_decay=1.0"])
    zero3 = tmp_path / "zero3.json"  # ZeRO-3 partitions the parameters the average needs whole
    zero3.write_text('{"zero_optimization": {"stage": 3}, "gradient_clipping": 0.0}')
    ds = ["engine.strategy=deepspeed", "model.saliency=none", f"engine.deepspeed_config={zero3}"]
    load_config(TINY, ds)
    with pytest.raises(ConfigError, match="model.ema_decay.*ZeRO stage 3"):
        load_config(TINY, [*ds, "model.ema_decay=0.9"])


def test_the_loop_updates_after_each_step_taken_and_skips_fp16_overflows(tmp_path):
    """fp16 on the CPU: the GradScaler's first scales overflow, so some steps are skipped. A
    checkpoint after every step gives each step's weights; the average recomputed from them with
    the documented formula, over the steps taken only, is the one the run saved."""
    decay, steps = 0.9, 6
    overrides = [f"output_dir={tmp_path}/run", "model.width=0.125", "engine.precision=fp16",
                 f"model.ema_decay={decay}", f"trainer.max_steps={steps}",
                 "trainer.checkpoint_every=1", "trainer.keep_checkpoints=100",
                 "trainer.image_log_every=0"]
    config = load_config(TINY, overrides)
    start = Trainer(config)
    start._build()
    expected = {k: v.double() for k, v in start.strategy.unwrap().state_dict().items()}
    summary = Trainer(config).fit()
    skipped = summary["skipped_steps"]
    assert 0 < skipped < steps, "this test needs both skipped and taken steps"

    updates, previous_skips = 0, 0
    for step in range(1, steps + 1):
        state = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", step))
        if state["skipped_steps"] > previous_skips:  # the scaler skipped this step
            previous_skips = state["skipped_steps"]
            assert state["ema"]["updates"] == updates, step
            continue
        d = min(decay, (1 + updates) / (10 + updates))
        expected = {k: d * v + (1 - d) * state["model"][k].double() for k, v in expected.items()}
        updates += 1
        assert state["ema"]["updates"] == updates, step
        for name, value in state["ema"]["model"].items():
            assert torch.allclose(value.double(), expected[name], rtol=1e-5, atol=1e-7), (step, name)
    assert updates == steps - skipped
    final = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", steps))
    assert any(not torch.equal(final["ema"]["model"][k], final["model"][k]) for k in final["model"])
