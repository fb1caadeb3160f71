"""fp16 under DeepSpeed: ZeRO-1/2 never back their loss scale off (the autocast GradScaler's
step/update run only inside the optimizer step that an overflowing step never reaches), so the
config refuses them and names the ways that work. DeepSpeed refuses fp16 on a CPU at initialize,
so the refusal is tested where the config is validated; the scale backing off under ZeRO-0 and
its state surviving a resume need a GPU (tests/engine/test_fp16_gpu.py)."""

import pytest

from mmdist.config import ConfigError, EngineConfig, load_config

from test_schedule import TINY


@pytest.mark.parametrize("stage", [1, 2])
def test_fp16_with_zero_1_or_2_is_refused_naming_the_ways_out(stage):
    with pytest.raises(ConfigError, match=rf"engine.precision: fp16 with DeepSpeed ZeRO-{stage} "
                                          r".*never backs its loss scale off; use engine\."
                                          r"precision=bf16, ZeRO stage 0 .*engine.strategy=ddp"):
        load_config(TINY, ["engine.strategy=deepspeed", "engine.precision=fp16",
                           f"engine.deepspeed_config=configs/deepspeed/zero{stage}.json"])


def test_fp16_with_zero_0_and_bf16_with_zero_1_are_accepted():
    EngineConfig(strategy="deepspeed", precision="fp16",
                 deepspeed_config="configs/deepspeed/zero0.json")
    EngineConfig(strategy="deepspeed", precision="bf16",
                 deepspeed_config="configs/deepspeed/zero1.json")
