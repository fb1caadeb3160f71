"""One schedule for a whole experiment: every variant of a config and every rank count that keeps
the global batch get the same epochs, the same learning rate at every step and the same end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmdist.config import ConfigError, load_config
from mmdist.engine.schedule import batch_per_rank, plan_run
from mmdist.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
# Two epochs of tiny's 84 classification training images at a global batch of 8: 10 steps each,
# the learning rate halved after every epoch.
SCHEDULE = ["data.global_batch_size=8", "trainer.max_steps=null", "trainer.max_epochs=2",
            "optim.lr_step_epochs=1", "optim.lr_gamma=0.5", "trainer.log_every=1",
            "trainer.checkpoint_every=0", "trainer.image_log_every=0", "trainer.val_every=0"]


def lr_by_step(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: round(e.value, 12) for e in events.Scalars("perf/lr")}


def test_plan_is_the_same_at_one_and_two_ranks():
    config = load_config(TINY, SCHEDULE)
    one, two = (plan_run(config, world, 84, "pool") for world in (1, 2))
    assert (one.batch_per_rank, two.batch_per_rank) == (8, 4)
    assert one.global_batch == two.global_batch == 8
    assert one.steps_per_epoch == two.steps_per_epoch == 10
    assert one.max_steps == two.max_steps == 20 and one.lr_step_size == two.lr_step_size == 10
    assert one.lr == two.lr


def test_a_global_batch_that_does_not_divide_is_refused():
    config = load_config(TINY, ["data.global_batch_size=10"])
    assert batch_per_rank(config.data, 5) == 2
    with pytest.raises(ConfigError, match=r"data.global_batch_size: 10 .* 4 ranks"):
        batch_per_rank(config.data, 4)


def test_max_steps_and_max_epochs_together_name_both_keys():
    with pytest.raises(ConfigError) as info:
        # Both on the command line (one on the command line replaces the file's other one).
        load_config(TINY, ["trainer.max_epochs=3", "trainer.max_steps=5"])
    assert "trainer.max_steps" in str(info.value) and "trainer.max_epochs" in str(info.value)


def test_scale_lr_is_refused_with_a_global_batch():
    with pytest.raises(ConfigError, match="optim.scale_lr"):
        load_config(TINY, ["data.global_batch_size=8", "optim.scale_lr=linear"])


@pytest.mark.slow
def test_unet_enc_and_multimix_log_the_same_lr_at_every_step(tmp_path):
    rates, summaries = {}, {}
    for variant in ("unet", "enc", "multimix"):
        run = tmp_path / variant
        config = load_config(TINY, [*SCHEDULE, f"model.variant={variant}", f"output_dir={run}"])
        summaries[variant] = Trainer(config).fit()
        rates[variant] = lr_by_step(run)
    assert sorted(rates["multimix"]) == list(range(1, 21))
    assert rates["unet"] == rates["enc"] == rates["multimix"]
    # The schedule really steps: 1e-4 for the first epoch, half of it for the second.
    assert rates["multimix"][9] == pytest.approx(1e-4, rel=1e-6)
    assert rates["multimix"][10] == pytest.approx(1e-4 / 2, rel=1e-6)
    assert {s["steps"] for s in summaries.values()} == {20}
    assert {s["steps_per_epoch"] for s in summaries.values()} == {10}


def torchrun(ranks: int, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", "-m", "mmdist.train", "--config", str(TINY),
               f"output_dir={run_dir}", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_rank_of_8_and_two_ranks_of_4_share_the_schedule(tmp_path):
    runs = {}
    for ranks in (1, 2):
        run = tmp_path / f"ranks{ranks}"
        done = torchrun(ranks, run, *SCHEDULE)  # engine.strategy is 'auto': ddp at 2 ranks
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        summary = json.loads((run / "summary.json").read_text())
        runs[ranks] = (summary, lr_by_step(run))
        assert f"on {ranks} rank(s)" in done.stdout
    (one, lr_one), (two, lr_two) = runs[1], runs[2]
    assert (one["strategy"], two["strategy"]) == ("single", "ddp")
    assert (one["batch_per_rank"], two["batch_per_rank"]) == (8, 4)
    assert one["steps"] == two["steps"] == 20
    assert lr_one == lr_two and len(lr_one) == 20


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_single_strategy_under_two_ranks_is_refused(tmp_path):
    done = torchrun(2, tmp_path / "run", "engine.strategy=single")
    assert done.returncode != 0
    assert done.stderr.count("engine.strategy=single, but the job has 2 ranks") == 2
    assert "engine.strategy=ddp" in done.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
