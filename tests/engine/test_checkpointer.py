"""One checkpointer over the run's parts; nothing non-finite saved; a run folder is one run's."""

from __future__ import annotations

import pytest
import torch

from mmdist.config import EngineConfig, load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.checkpointer import Checkpointer, StateFns
from mmdist.engine.run_folder import RunFolderError
from mmdist.engine.single import SingleProcessStrategy
from mmdist.engine.trainer import Trainer
from mmdist.evaluation.trained_model import load_model

from test_schedule import TINY

QUIET = ["trainer.image_log_every=0", "trainer.log_every=0"]


def tiny(run, *overrides):
    return load_config(TINY, [f"output_dir={run}", *QUIET, *overrides])


def test_a_registered_part_is_saved_and_restored_and_a_missing_one_is_named(tmp_path):
    strategy = SingleProcessStrategy(EngineConfig(device="cpu"))
    model = torch.nn.Linear(3, 2)
    strategy.setup(model, torch.optim.Adam(model.parameters()))
    counter = {"n": 7}
    saver = Checkpointer(tmp_path, strategy, keep=2, finite_modules=lambda: {"": model})
    for name, (part, options) in strategy.checkpoint_parts().items():
        saver.register(name, part, **options)
    saver.register("threshold", StateFns(lambda: dict(counter), counter.update))  # one line
    saver.save(3)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path, 3))
    assert state["threshold"] == {"n": 7} and state["step"] == 3
    assert torch.equal(state["model"]["weight"], model.weight.detach())

    counter["n"] = 0
    with torch.no_grad():
        model.weight.zero_()
    assert saver.restore(state, "x.pt") == 3
    assert counter["n"] == 7 and torch.equal(model.weight.detach(), state["model"]["weight"])
    del state["threshold"]
    with pytest.raises(ckpt.CheckpointError, match="no 'threshold' entry"):
        saver.restore(state, "x.pt")


def poison_weights_after(trainer: Trainer, bad_step: int) -> None:
    """A real NaN in the weights after an update (what fp32/bf16 overflow does while the loss of
    that step was still finite): an optimizer post-step hook on the run's own optimizer."""
    build = trainer._build

    def build_then_hook():
        build()
        steps = {"n": 0}

        def hook(optimizer, *_):
            steps["n"] += 1
            if steps["n"] == bad_step:
                with torch.no_grad():
                    next(trainer.strategy.unwrap().parameters()).fill_(float("nan"))

        trainer.optimizer.register_step_post_hook(hook)

    trainer._build = build_then_hook


def test_nan_weights_after_an_update_reach_neither_best_pt_nor_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny(run, "trainer.max_steps=4", "trainer.val_every=2",
                           "trainer.checkpoint_every=2", "model.ema_decay=0.5"))
    poison_weights_after(trainer, 2)
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError,
                                                  match="weights after step 2 are not finite"):
        trainer.fit()
    assert not ckpt.best_checkpoint_path(run).exists()  # NaN weights score finitely: not kept
    assert ckpt.list_checkpoints(run) == []


def test_a_checkpoint_that_is_not_a_dict_is_set_aside_like_a_corrupt_one(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(run, "trainer.max_steps=4", "trainer.checkpoint_every=2")).fit()
    torch.save([1, 2, 3], ckpt.checkpoint_path(run, 4))
    with pytest.raises(ckpt.CheckpointError, match="a list, not a dict"):
        ckpt.load_checkpoint(ckpt.checkpoint_path(run, 4))
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*step_00000004"):
        summary = Trainer(tiny(run, "trainer.max_steps=3", "trainer.checkpoint_every=1",
                               "trainer.resume=true")).fit()
    assert summary["start_step"] == 2
    assert (run / "checkpoints" / "step_00000004.pt.corrupt").is_file()


def test_resuming_an_older_checkpoint_moves_the_newer_ones_aside(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(run, "trainer.max_steps=6", "trainer.checkpoint_every=2",
                 "trainer.keep_checkpoints=3")).fit()
    # best.pt as the abandoned continuation left it: chosen at step 6.
    best = ckpt.best_checkpoint_path(run)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 6))
    ckpt.atomic_torch_save({**state, "selection": {"metric": "val_mean", "weights": "raw",
                                                   "step": 6, "value": 2.0}}, best)
    older = ckpt.checkpoint_path(run, 2)
    with pytest.warns(UserWarning, match=r"resuming at step 2; step_00000004\.pt, "
                                         r"step_00000006\.pt, best\.pt of the abandoned "
                                         r"continuation are moved aside"):
        summary = Trainer(tiny(run, "trainer.max_steps=3", "trainer.checkpoint_every=1",
                               f"trainer.resume={older}")).fit()
    assert summary["start_step"] == 2 and summary["steps"] == 3
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]
    assert (run / "checkpoints" / "step_00000006.pt.abandoned").is_file()
    assert (run / "checkpoints" / "best.pt.abandoned").is_file() and not best.exists()
    assert ckpt.find_latest_checkpoint(run) == ckpt.checkpoint_path(run, 3)


def test_a_second_run_into_a_used_folder_is_refused_unless_overwritten(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(run, "trainer.max_steps=8")).fit()  # steps 4 and 8
    with pytest.raises(RunFolderError, match=r"output_dir .*run holds another run's files .*"
                                             r"trainer\.resume=true.*new output_dir.*"
                                             r"trainer\.overwrite=true"):
        Trainer(tiny(run, "model.variant=unet", "trainer.max_steps=4")).fit()
    summary = Trainer(tiny(run, "model.variant=unet", "trainer.max_steps=4",
                           "trainer.overwrite=true")).fit()
    assert summary["variant"] == "unet"
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4]  # the old step 8 is gone
    assert len(list((run / "tb").rglob("events.out.tfevents.*"))) == 1


def test_resume_and_evaluate_refuse_a_checkpoint_of_another_network(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny(run, "model.variant=unet", "trainer.max_steps=4")).fit()
    with pytest.raises(RunFolderError, match=r"step_00000004\.pt: trained as another network .*"
                                             r"model\.variant: checkpoint 'unet', run 'multimix'"):
        Trainer(tiny(run, "trainer.max_steps=8", "trainer.resume=true")).fit()
    assert "unet" in (run / "config.yaml").read_text()  # the refused run left the folder as is
    # A checkpoint copied into another run's folder: evaluate says it is not that run's network.
    other = tmp_path / "other"
    Trainer(tiny(other, "trainer.max_steps=4")).fit()
    stray = other / "checkpoints" / "stray.pt"
    stray.write_bytes(ckpt.checkpoint_path(run, 4).read_bytes())
    with pytest.raises(RunFolderError, match=r"model\.variant: checkpoint 'unet', run 'multimix'"):
        load_model(stray)
    load_model(ckpt.checkpoint_path(other, 4))  # its own checkpoint loads
    with pytest.raises(RunFolderError, match=r"run 'multimix'"):  # named for another run
        load_model(ckpt.checkpoint_path(run, 4), run_dir=other)
