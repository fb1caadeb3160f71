"""The classifier's threshold schedule, distribution alignment and the weak-to-strong draws
resume exactly: a run stopped and resumed ends with the uninterrupted run's threshold state and
weights, bit for bit."""

import torch

from mmdist.engine import checkpoint as ckpt
from mmdist.engine.trainer import Trainer
from mmdist.losses import PseudoLabeler
from test_trainer import tiny_config

METHODS = ("losses.threshold=freematch", "losses.dist_align=true", "losses.threshold_momentum=0.5",
           "losses.seg_unlabeled=w2s", "losses.w2s_feature_dropout=0.5",
           "data.augment.seg_appearance=true", "trainer.checkpoint_every=2",
           "trainer.image_log_every=0", "trainer.log_every=0")


def test_threshold_state_and_weights_resume_exactly(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", "trainer.max_steps=4", *METHODS)).fit()
    Trainer(tiny_config(tmp_path / "split", "trainer.max_steps=2", *METHODS)).fit()
    summary = Trainer(tiny_config(tmp_path / "split", "trainer.max_steps=4", "trainer.resume=true",
                                  *METHODS)).fit()
    assert summary["start_step"] == 2 and summary["steps"] == 4
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "straight", 4))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "split", 4))
    for name, tensor in a["threshold"].items():
        assert torch.equal(tensor, b["threshold"][name]), name
    assert int(a["threshold"]["updates"]) == 4
    # The state moved away from its start, so a resume that dropped it would end elsewhere.
    start = PseudoLabeler("freematch", dist_align=True).state_dict()
    assert not torch.equal(a["threshold"]["tau"], start["tau"])
    assert not torch.equal(a["threshold"]["da_model"], start["da_model"])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
