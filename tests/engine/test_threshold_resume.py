"""The classifier's threshold schedule and distribution alignment in the training loop: the state
moves with the steps taken only (a skipped step leaves it bit for bit as it was), and a run stopped
and resumed, with the weak-to-strong draws, ends with the uninterrupted run's threshold state and
weights, bit for bit."""

import pytest
import torch

from mmdist.config import LossConfig
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.step import training_losses
from mmdist.engine.trainer import Trainer
from mmdist.losses import PseudoLabeler
from mmdist.model import VARIANTS
from test_ddp_gradients import fresh_model, global_batch
from test_trainer import tiny_config

QUIET = ("trainer.image_log_every=0", "trainer.log_every=0")
METHODS = ("losses.dist_align=true", "losses.threshold_momentum=0.5",
           "losses.seg_unlabeled=w2s", "losses.w2s_feature_dropout=0.5",
           "data.augment.seg_appearance=true", "trainer.checkpoint_every=2", *QUIET)
# What each schedule's state holds beyond updates and the alignment's two EMAs.
SCHEDULE_STATE = {"freematch": ("tau", "p_model"), "softmatch": ("mu", "var")}


def _threshold(run, step: int) -> dict:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run, step))["threshold"]


@pytest.mark.parametrize("schedule", ["freematch", "softmatch"])
def test_threshold_state_and_weights_resume_exactly(tmp_path, schedule):
    methods = (f"losses.threshold={schedule}", *METHODS)
    Trainer(tiny_config(tmp_path / "straight", "trainer.max_steps=4", *methods)).fit()
    Trainer(tiny_config(tmp_path / "split", "trainer.max_steps=2", *methods)).fit()
    summary = Trainer(tiny_config(tmp_path / "split", "trainer.max_steps=4", "trainer.resume=true",
                                  *methods)).fit()
    assert summary["start_step"] == 2 and summary["steps"] == 4
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "straight", 4))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "split", 4))
    assert set(a["threshold"]) == set(b["threshold"])
    for name, tensor in a["threshold"].items():
        assert torch.equal(tensor, b["threshold"][name]), name
    assert int(a["threshold"]["updates"]) == 4
    # The state the resume started from had moved away from its start in every part this
    # configuration drives, and moved again after it: a resume that dropped or re-initialised
    # any part would end elsewhere.
    start = PseudoLabeler(schedule, dist_align=True).state_dict()
    at_resume = _threshold(tmp_path / "split", 2)
    assert int(at_resume["updates"]) == 2
    for name in ("da_model", "da_target", *SCHEDULE_STATE[schedule]):
        assert not torch.equal(at_resume[name], start[name]), name
        assert not torch.equal(a["threshold"][name], at_resume[name]), name
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_a_step_with_non_finite_weak_logits_is_skipped_and_leaves_the_state_unchanged(tmp_path):
    """The weak view's logits made NaN on step 2 (what an fp16 overflow of that forward gives):
    FreeMatch's comparison alone would keep the loss finite and train on, with a NaN state for
    every later step. The step is skipped instead, and the state is step 1's, bit for bit."""
    trainer = Trainer(tiny_config(tmp_path / "run", "trainer.max_steps=4", "model.width=0.125",
                                  "losses.threshold=freematch", "losses.dist_align=true",
                                  "losses.threshold_momentum=0.5", "trainer.checkpoint_every=1",
                                  "trainer.keep_checkpoints=10", *QUIET))
    build, forwards = trainer._build, {"n": 0}

    def nan_weak_logits(module, _args, out):
        if module.training:
            forwards["n"] += 1  # one training forward per step: step n is forward n
            if forwards["n"] == 2:
                out.pseudo_logits = out.pseudo_logits * float("nan")
        return out

    def build_then_hook():
        build()
        trainer.strategy.unwrap().register_forward_hook(nan_weak_logits)

    trainer._build = build_then_hook
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["steps"] == 4
    states = {step: _threshold(tmp_path / "run", step) for step in range(1, 5)}
    for name, tensor in states[1].items():
        assert torch.equal(tensor, states[2][name]), name
    assert not torch.equal(states[3]["tau"], states[2]["tau"])  # a step taken moves it
    assert [int(states[s]["updates"]) for s in range(1, 5)] == [1, 1, 2, 3]
    assert all(torch.isfinite(t.float()).all() for t in states[4].values())


def test_fp16_overflow_steps_leave_the_state_unchanged(tmp_path):
    """fp16 on the CPU: the GradScaler's first scales overflow and those steps are skipped with a
    finite loss; the threshold state only counts and moves with the steps taken."""
    run = tmp_path / "run"
    summary = Trainer(tiny_config(run, "trainer.max_steps=6", "model.width=0.125",
                                  "engine.precision=fp16", "losses.threshold=softmatch",
                                  "losses.threshold_momentum=0.5", "trainer.checkpoint_every=1",
                                  "trainer.keep_checkpoints=100", *QUIET)).fit()
    skipped = summary["skipped_steps"]
    assert 0 < skipped < 6, "this test needs both skipped and taken steps"
    previous, previous_skips = PseudoLabeler("softmatch").state_dict(), 0
    for step in range(1, 7):
        checkpoint = ckpt.load_checkpoint(ckpt.checkpoint_path(run, step))
        state, skips = checkpoint["threshold"], checkpoint["skipped_steps"]
        unchanged = all(torch.equal(t, previous[name]) for name, t in state.items())
        assert unchanged == (skips > previous_skips), step
        previous, previous_skips = state, skips
    assert int(previous["updates"]) == 6 - skipped


def test_a_stateful_threshold_needs_the_runs_labeler():
    """Without the run's labeler a stateful schedule would start afresh every step: refused.
    The paper's fixed threshold needs none."""
    model, batch = fresh_model("detached", torch.float32), global_batch(1, torch.float32)
    for losses in (LossConfig(threshold="freematch"), LossConfig(dist_align=True)):
        with pytest.raises(ValueError, match="pass the run's PseudoLabeler"):
            training_losses(model, batch, VARIANTS["multimix"], losses, 1)
    fixed = LossConfig(tau=0.0)
    loss, terms = training_losses(model, batch, VARIANTS["multimix"], fixed, 1)
    with_labeler, _ = training_losses(model, batch, VARIANTS["multimix"], fixed, 1,
                                      PseudoLabeler("fixed", tau=0.0))
    assert torch.isfinite(loss) and terms["mask_ratio"] == 1.0
    assert torch.equal(loss.detach(), with_labeler.detach())
