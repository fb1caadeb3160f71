"""The training loop: config in, trained run directory out.

RUN_DIR (config.output_dir) receives config.yaml (the resolved config), tb/ (TensorBoard),
checkpoints/ (atomic, rotated) and summary.json. Which engine runs the backward (single process,
DDP, DeepSpeed), which backend makes the views (torch, DALI) and which launcher started the
process are all decided elsewhere; the loop below is the same for each.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mmdist.augment.sources import build_step_source
from mmdist.config import Config, dump_config
from mmdist.data.sources import build_task_data
from mmdist.data.streams import iterate_steps
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.precision import autocast
from mmdist.engine.step import training_losses
from mmdist.engine.strategies import Strategy, build_strategy
from mmdist.engine.tb_logger import TensorBoardLogger
from mmdist.engine.validation import validate
from mmdist.model import VARIANTS, build_model

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
"""Preemption/time-limit signals: finish the step, checkpoint, stop (SLURM sends USR2 with
--signal; USR1 is left alone because NCCL uses it)."""


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def flat_hparams(config: Config) -> dict:
    return {"variant": config.model.variant, "saliency": config.model.resolved_saliency,
            "cls_labeled": str(config.data.budget.classification_labeled),
            "seg_labeled": str(config.data.budget.segmentation_labeled), "seed": config.seed,
            "lr": config.optim.lr, "batch_size": config.data.batch_size,
            "image_size": config.data.image_size, "precision": config.engine.precision,
            "strategy": config.engine.strategy, "max_steps": config.trainer.max_steps}


class Trainer:
    def __init__(self, config: Config, strategy: Strategy | None = None):
        self.config = config
        self.spec = VARIANTS[config.model.variant]
        if config.trainer.threads:
            torch.set_num_threads(config.trainer.threads)
        if config.trainer.deterministic:
            torch.use_deterministic_algorithms(True)
        self.strategy = strategy or build_strategy(config.engine)
        self.run_dir = Path(config.output_dir)
        self.stop_requested = False

    # ---- set-up ------------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        resume = self.config.trainer.resume
        if resume is False or resume in ("", "false", "False"):
            return None
        if resume is True or resume in ("true", "True", "latest"):
            return self.strategy.latest_checkpoint(self.run_dir)
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"trainer.resume: checkpoint not found: {path}")
        return path

    def _request_stop(self, signum, _frame) -> None:
        self.stop_requested = True

    def install_signal_handlers(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._request_stop)

    def _build(self):
        config, strategy = self.config, self.strategy
        seed_everything(config.seed)
        self.task_data = build_task_data(config, self.spec.tasks)
        self.source = build_step_source(config, self.task_data, self.spec.streams, strategy.rank,
                                        strategy.world_size)
        self.steps_per_epoch = config.trainer.steps_per_epoch or self.source.steps_per_epoch()
        model = build_model(config.model)
        if config.engine.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in model.parameters())
        ranks = strategy.world_size
        scale = {"none": 1.0, "linear": float(ranks), "sqrt": math.sqrt(ranks)}[config.optim.scale_lr]
        self.lr = config.optim.lr * scale
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr,
                                     weight_decay=config.optim.weight_decay)
        self.model = strategy.setup(model, optimizer)
        self.optimizer = strategy.optimizer
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.optim.lr_step_epochs * self.steps_per_epoch,
            gamma=config.optim.lr_gamma)
        self.logger = TensorBoardLogger(self.run_dir / "tb", enabled=strategy.is_main)

    def _restore(self) -> int:
        path = self._resume_path()
        if path is None:
            return 0
        state = self.strategy.load_checkpoint(path)
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        return int(state["step"])

    def save(self, step: int) -> None:
        """Checkpoint through the strategy (rank 0 writes, the others wait; DeepSpeed: every rank)."""
        self.strategy.save_checkpoint(self.run_dir, step, {"scheduler": self.scheduler.state_dict(),
                                                           "config": self.config.to_dict()},
                                      keep=self.config.trainer.keep_checkpoints)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        config, strategy = self.config, self.strategy
        if strategy.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(config, self.run_dir / "config.yaml")
        self._build()
        start = self._restore()
        tc = config.trainer
        if strategy.is_main:
            self.logger.scalars({"global_batch_per_stream": config.data.batch_size * strategy.world_size,
                                 "lr_scaled": self.lr, "ranks": strategy.world_size}, start, "setup/")
        progress = tqdm(total=tc.max_steps, initial=start, disable=not (tc.progress and strategy.is_main),
                        desc=f"{config.model.variant}", dynamic_ncols=True)
        images_done, seconds = 0, 0.0
        step = start
        last_val: dict[str, float] = {}
        window_start, window_images = time.perf_counter(), 0
        self.model.train()
        batches = iterate_steps(self.source, start, tc.max_steps, config.data.workers)
        for batch in batches:
            tick = time.perf_counter()
            batch = batch.to(strategy.device, non_blocking=True,
                             channels_last=config.engine.channels_last)
            with autocast(strategy.device, strategy.precision):
                loss, terms = training_losses(self.model, batch, self.spec, config.losses, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss.item()} ({_fmt(terms)})")
            if strategy.backward_step(loss):
                # A step the fp16 GradScaler skipped does not advance the schedule either.
                self.scheduler.step()
            step += 1
            seconds += time.perf_counter() - tick
            images_done += batch.image_count
            window_images += batch.image_count
            progress.update(1)
            if tc.log_every and step % tc.log_every == 0:
                now = time.perf_counter()
                rate = window_images * strategy.world_size / max(now - window_start, 1e-9)
                window_start, window_images = now, 0
                if strategy.world_size > 1:  # log the mean over ranks, not rank 0's shard
                    names = list(terms)
                    summed = strategy.all_reduce_sum(torch.stack([terms[k].float() for k in names]))
                    terms = dict(zip(names, summed / strategy.world_size))
                self.logger.scalars({k: v.item() for k, v in terms.items()}, step, "train/")
                self.logger.scalars({"lr": self.scheduler.get_last_lr()[0], "images_per_s": rate,
                                     "skipped_steps": strategy.skipped_steps}, step, "perf/")
                progress.set_postfix(loss=f"{terms['total'].item():.3f}")
            if tc.image_log_every and step % tc.image_log_every == 0:
                self._log_images(batch, step)
            if tc.val_every and step % tc.val_every == 0 and step < tc.max_steps:
                last_val = validate(self.model_for_eval(), self.task_data, self.spec, strategy,
                                    config.data.eval_batch_size, config.data.image_size)
                self.logger.scalars(_val_tags(last_val), step, "val/")
            stopping = self._stop_agreed()
            if (tc.checkpoint_every and step % tc.checkpoint_every == 0) or stopping:
                self.save(step)
            if stopping:
                break
        progress.close()
        status = "completed" if step >= tc.max_steps else "preempted"
        if status == "completed":
            last_val = validate(self.model_for_eval(), self.task_data, self.spec, strategy,
                                config.data.eval_batch_size, config.data.image_size)
            self.logger.scalars(_val_tags(last_val), step, "val/")
            latest = strategy.latest_checkpoint(self.run_dir)
            if latest is None or ckpt.checkpoint_path(self.run_dir, step) != latest:
                self.save(step)
        summary = {"status": status, "steps": step, "start_step": start,
                   "images_per_s": images_done * strategy.world_size / seconds if seconds else 0.0,
                   "train_seconds": seconds, "params": self.params, "variant": config.model.variant,
                   "saliency": config.model.resolved_saliency, "ranks": strategy.world_size,
                   "skipped_steps": strategy.skipped_steps, **last_val}
        if strategy.is_main:
            if status == "completed":
                self.logger.hparams(flat_hparams(config),
                                    {f"hparam/{k}": v for k, v in last_val.items()})
            _atomic_json(summary, self.run_dir / "summary.json")
        self.logger.close()
        return summary

    def model_for_eval(self):
        return self.strategy.unwrap()

    def _stop_agreed(self) -> bool:
        """All ranks stop together if any received a stop signal."""
        flag = torch.tensor([float(self.stop_requested)], device=self.strategy.device)
        if self.strategy.world_size > 1:
            flag = self.strategy.all_reduce_sum(flag)
        return bool(flag.item() > 0)

    @torch.no_grad()
    def _log_images(self, batch, step: int) -> None:
        if not self.strategy.is_main or batch.seg_labeled is None:
            return
        model = self.model_for_eval()
        was_training = model.training
        model.eval()
        out = model(seg_images=batch.seg_labeled[:8])
        model.train(was_training)
        self.logger.images("images/seg_input", batch.seg_labeled, step)
        self.logger.images("images/seg_truth", batch.seg_labeled_mask, step)
        self.logger.images("images/seg_predicted", torch.sigmoid(out.seg_logits.float()), step)
        if out.saliency is not None:
            self.logger.images("images/saliency", out.saliency, step)
        if batch.cls_unlabeled_strong is not None:
            self.logger.images("images/cls_strong_view", batch.cls_unlabeled_strong, step)


def _val_tags(metrics: dict) -> dict:
    """{'val_acc': x} -> {'acc': x}, logged under val/."""
    return {k.removeprefix("val_"): v for k, v in metrics.items()}


def _fmt(terms: dict) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())


def _atomic_json(data: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
