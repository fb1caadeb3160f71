"""The training loop: config in, trained run directory out.

RUN_DIR (config.output_dir) receives config.yaml (the resolved config), tb/ (TensorBoard),
checkpoints/ (atomic, rotated; best.pt by trainer.select_by, mmdist.engine.selection) and
summary.json. Which engine runs the backward (single process, DDP, DeepSpeed), which backend
makes the views (torch, DALI) and which launcher started the process are all decided elsewhere;
the loop below is the same for each, and tells the strategy what it needs to know of the model
(``find_unused_parameters``). What a run means at any rank count (batch, epochs, learning
rate) is mmdist.engine.schedule; its seeds mmdist.engine.rng; its weight average
mmdist.engine.ema.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import signal
from pathlib import Path

import torch

from mmdist.augment.step_source import build_step_source
from mmdist.config import Config, dump_config
from mmdist.data.audit import write_split
from mmdist.data.task_data import build_task_data, epoch_pool
from mmdist.data.feeding import iterate_steps
from mmdist.engine import checkpoint as ckpt
from mmdist.engine import console
from mmdist.engine import rng
from mmdist.engine.checkpointer import assert_finite, run_checkpointer
from mmdist.engine.clock import TrainingClock
from mmdist.engine.devices import configure_numerics, threads_per_rank
from mmdist.engine.ema import ModelEMA
from mmdist.engine.precision import autocast
from mmdist.engine.resume import resume
from mmdist.engine.run_folder import check_config_matches, claim
from mmdist.engine.schedule import batch_per_rank, plan_run
from mmdist.engine.selection import build_selection
from mmdist.engine.step import training_losses
from mmdist.engine.strategies import build_strategy
from mmdist.engine.strategy import Strategy
from mmdist.engine.sync_points import FiniteLossWatch, SkippedSteps, StopAgreement
from mmdist.engine.tb_logger import TensorBoardLogger
from mmdist.engine.validation import validate
from mmdist.losses import build_pseudo_labeler
from mmdist.model import VARIANTS, build_model

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
"""Preemption/time-limit signals: finish the step, checkpoint, stop (SLURM sends USR2 with
--signal; USR1 is left alone because NCCL uses it)."""


def flat_hparams(config: Config, plan) -> dict:
    return {"variant": config.model.variant, "saliency": config.model.resolved_saliency,
            "cls_labeled": str(config.data.budget.classification_labeled),
            "seg_labeled": str(config.data.budget.segmentation_labeled), "seed": config.seed,
            "lr": config.optim.lr, "batch_size": plan.batch_per_rank,
            "global_batch_size": plan.global_batch, "image_size": config.data.image_size,
            "precision": config.engine.precision, "strategy": config.engine.strategy,
            "ranks": plan.world_size, "max_steps": plan.max_steps}


def find_unused_parameters(engine_config, spec) -> bool:
    """Whether DDP must look for parameters without a gradient after every backward:
    engine.find_unused_parameters, where 'auto' takes the variant's declaration
    (VariantSpec.unused_parameters)."""
    choice = engine_config.find_unused_parameters
    return spec.unused_parameters if choice == "auto" else choice == "true"


class Trainer:
    def __init__(self, config: Config, strategy: Strategy | None = None):
        # A copy: the per-rank batch below is written into it, and callers may reuse theirs.
        self.config = config = copy.deepcopy(config)
        self.spec = VARIANTS[config.model.variant]
        configure_numerics(config.engine, config.trainer.deterministic)  # before any CUDA kernel
        # The datasets first: a cold raw or csv source is prepared here (one process per cache,
        # the others wait on its lock), before any process group exists, so no rank waits for
        # it inside a collective whose timeout it could outlast.
        self.task_data = build_task_data(config, self.spec.tasks)
        self.strategy = strategy or build_strategy(config.engine)
        self.threads = threads_per_rank(config.trainer.threads, self.strategy.local_world_size)
        torch.set_num_threads(self.threads.threads)
        config.data.batch_size = batch_per_rank(config.data, self.strategy.world_size)
        self.run_dir = Path(config.output_dir)
        self.stop_requested = False

    def close(self) -> None:
        """Release the wrapped model (DDP's reducer, DeepSpeed's engine hold the process group)
        before the strategy destroys the group: the other order can abort a rank at exit and
        turn exit status 3 (preempted, requeue) into 134. Safe to call on any path."""
        self.model = self.optimizer = self.scheduler = self.checkpointer = None
        gc.collect()
        self.strategy.close()

    def _request_stop(self, signum, _frame) -> None:
        self.stop_requested = True

    def install_signal_handlers(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._request_stop)

    # ---- set-up ------------------------------------------------------------------------------
    def _build(self) -> None:
        config, strategy = self.config, self.strategy
        pool = epoch_pool(config, self.task_data)
        self.plan = plan_run(config, strategy.world_size, pool.images, pool.description)
        self.source = build_step_source(config, self.task_data, self.spec.streams, strategy.rank,
                                        strategy.world_size)
        rng.seed_all(config.seed)  # the same initial weights on every rank and at any rank count
        model = build_model(config.model)
        rng.seed_rank(config.seed, strategy.rank)  # from here on, each rank draws its own stream
        if config.engine.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in model.parameters())
        self.ema = (ModelEMA(model, config.model.ema_decay, strategy.device)
                    if config.model.ema_decay else None)
        self.best = build_selection(config, self.spec, self.task_data, bool(self.ema))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.plan.lr,
                                     weight_decay=config.optim.weight_decay)
        self.model = strategy.setup(model, optimizer,
                                    find_unused_parameters(config.engine, self.spec))
        self.optimizer = strategy.optimizer
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=self.plan.lr_step_size, gamma=config.optim.lr_gamma)
        # The threshold/alignment state, its batch statistics summed over the ranks.
        self.pseudo_labeler = build_pseudo_labeler(config.losses,
                                                   reduce_sum=strategy.all_reduce_sum)

    def _restore(self) -> int:
        """Resume (mmdist.engine.resume) every part, after checking that the checkpoint was
        trained as the network this run's config describes."""
        current = self.config.to_dict()
        step = resume(self.config.trainer.resume, self.checkpointer, self.run_dir,
                      check=lambda state, path: check_config_matches(state, current, path,
                                                                     "this run's config"))
        return step or 0

    def save(self, step: int) -> None:
        """Checkpoint every part, with every rank's random states; never weights that a
        non-finite loss or update has reached."""
        self.finite.check(step)
        self.checkpointer.save(step)

    def _announce(self, start: int) -> None:
        """One line at start: how this run is laid out (rank 0, stdout)."""
        if not self.strategy.is_main:
            return
        s, p = self.strategy, self.plan
        print(f"mmdist: {self.config.model.variant} on {s.world_size} rank(s) ({s.name}), "
              f"device {s.device}, {self.threads.threads} CPU thread(s) per rank "
              f"({self.threads.source}); {p.batch_per_rank} images per stream per rank, "
              f"{p.global_batch} global; {p.steps_per_epoch} steps per epoch "
              f"({p.epoch_description}); steps {start}..{p.max_steps}, lr {p.lr:g}", flush=True)
        print(console.run_folder_line(self.run_dir), flush=True)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict:
        config, strategy = self.config, self.strategy
        # Every rank looks before rank 0 changes anything: all refuse together, or none does.
        if strategy.is_main:
            removed = claim(self.run_dir, config.trainer.resume, config.trainer.overwrite)
            if removed:
                print(f"mmdist: trainer.overwrite: removed the previous run's {len(removed)} "
                      f"file(s) from {self.run_dir}", flush=True)
        elif not config.trainer.overwrite:
            claim(self.run_dir, config.trainer.resume, False)
        self._build()
        self.checkpointer = run_checkpointer(self.run_dir, config, strategy, self.scheduler,
                                             self.ema, self.best)
        # The classifier's pseudo-label schedule (mmdist.losses.pseudo_label); the same on every
        # rank (summed statistics). Older checkpoints lack it: it then starts fresh.
        self.checkpointer.register("threshold", self.pseudo_labeler, optional=True)
        start = self._restore()
        if strategy.is_main:  # after the checks of resume: a refused run leaves the folder as is
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(config, self.run_dir / "config.yaml")
            write_split(self.task_data, self.run_dir)  # the split, for audits (mmdist.data.audit)
        # Steps are logged as the count of steps done: a run resumed at `start` logs start + 1
        # first, and whatever a crashed run logged from there on is dropped.
        self.logger = TensorBoardLogger(self.run_dir / "tb", enabled=strategy.is_main,
                                        purge_step=start + 1 if start else None)
        self.logger.scalars(self.plan.as_scalars(), start, "setup/")
        self._announce(start)
        with strategy.watching():
            step, last_val, clock = self._loop(start)
        self.finite.check(step)  # no summary or checkpoint of a run whose loss went non-finite
        max_steps = self.plan.max_steps
        status = "completed" if step >= max_steps else "preempted"
        if status == "completed":
            last_val = self._validate(step)
            latest = strategy.latest_checkpoint(self.run_dir)
            if latest is None or ckpt.checkpoint_path(self.run_dir, step) != latest:
                self.save(step)
        seconds = clock.seconds
        summary = {"status": status, "steps": step, "start_step": start,
                   "images_per_s": clock.images * strategy.world_size / seconds if seconds else 0.0,
                   "train_seconds": seconds, "data_wait_s": clock.data_wait_s,
                   "params": self.params, "variant": config.model.variant,
                   "saliency": config.model.resolved_saliency, "ranks": strategy.world_size,
                   "strategy": strategy.name, "device": str(strategy.device),
                   "threads_per_rank": self.threads.threads,
                   "batch_per_rank": self.plan.batch_per_rank,
                   "global_batch_per_stream": self.plan.global_batch,
                   "steps_per_epoch": self.plan.steps_per_epoch,
                   "skipped_steps": strategy.skipped_steps, **last_val,
                   **(self.best.summary() if self.best else {})}
        if strategy.is_main:
            if status == "completed":
                self.logger.hparams(flat_hparams(config, self.plan),
                                    {f"hparam/{k}": v for k, v in last_val.items()})
            _atomic_json(summary, self.run_dir / "summary.json")
        self.logger.close()
        return summary

    def _loop(self, start: int):
        config, strategy = self.config, self.strategy
        max_steps = self.plan.max_steps
        # A bar on a terminal, a line every log_every steps in a job's log (mmdist.engine.console)
        self.progress = progress = console.progress_bar(
            max_steps, start, config.model.variant, config.trainer.progress and strategy.is_main,
            config.trainer.log_every or 50)
        clock = TrainingClock(strategy.synchronize)
        self.finite = FiniteLossWatch(strategy.device)
        self.skips = SkippedSteps(config.engine.max_skipped_in_a_row)
        self.stops = StopAgreement(strategy, config.trainer.stop_check_every, max_steps)
        step, self.last_val = start, {}
        self.model.train()
        clock.start()
        batches = iterate_steps(self.source, start, max_steps, config.data.workers,
                                config.data.worker_start, device=strategy.device)
        with contextlib.closing(batches):  # an early stop also ends the prefetch thread
            for batch in clock.waiting_for(batches):
                batch = batch.to(strategy.device, non_blocking=True,
                                 channels_last=config.engine.channels_last).as_model_input()
                with autocast(strategy.device, strategy.precision):
                    loss, terms = training_losses(self.model, batch, self.spec, config.losses,
                                                  step, self.pseudo_labeler)
                if strategy.backward_step(loss):
                    self.pseudo_labeler.commit()  # its state moves with the steps taken only
                    self.finite.add(loss, step)  # no host sync: read at the loop's sync points
                    self.skips.taken()
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update(strategy.unwrap())
                else:  # skipped on every rank: advances no schedule, threshold or EMA
                    self.pseudo_labeler.discard()
                    self.skips.skipped(step + 1)  # steps counted as in the logs
                step += 1
                strategy.progress(step)
                clock.add_images(batch.image_count)
                progress.update(1)
                if self._between_steps(step, batch, terms, clock, progress):
                    break
        clock.pause()
        progress.close()
        return step, self.last_val, clock

    def _between_steps(self, step: int, batch, terms: dict, clock, progress) -> bool:
        """Logs, images, validation, the stop agreement and checkpoints after ``step``, each on
        its own period; True when the ranks agreed to stop."""
        tc, max_steps = self.config.trainer, self.plan.max_steps
        if tc.log_every and step % tc.log_every == 0:
            self.finite.check(step)  # the log line reads the loss anyway: the sync is paid
            self._log_scalars(terms, step, clock, progress)
        if tc.image_log_every and step % tc.image_log_every == 0:
            clock.pause()
            self._log_images(batch, step)
        if tc.val_every and step % tc.val_every == 0 and step < max_steps:
            clock.pause()
            self.last_val = self._validate(step)
        stopping = self.stops.agreed(step, self.stop_requested)
        # The last step is validated and saved by fit, in that order: its checkpoint then
        # carries the best-so-far record of that validation too.
        if (tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < max_steps) \
                or stopping:
            clock.pause()
            self.save(step)
        clock.resume()
        return stopping

    def _log_scalars(self, terms: dict, step: int, clock, progress) -> None:
        strategy = self.strategy
        rate = clock.window_rate() * strategy.world_size
        if strategy.world_size > 1:  # log the mean over ranks, not rank 0's shard
            names = list(terms)
            summed = strategy.all_reduce_sum(torch.stack([terms[k].float() for k in names]))
            terms = dict(zip(names, summed / strategy.world_size))
        self.logger.scalars({k: v.item() for k, v in terms.items()}, step, "train/")
        self.logger.scalars({"lr": self.scheduler.get_last_lr()[0], "images_per_s": rate,
                             "data_wait_s": clock.data_wait_s,
                             "skipped_steps": strategy.skipped_steps}, step, "perf/")
        progress.set_postfix(loss=f"{terms['total'].item():.3f}")

    def _validate(self, step: int) -> dict:
        """Validate the raw weights (val/, val_acc) and the EMA's (val_ema/, val_ema_acc); keep
        best.pt when this is the best validation so far."""
        metrics = self._validate_weights(self.model_for_eval(), step, "val")
        if self.ema is not None:
            metrics.update(self._validate_weights(self.ema.module, step, "val_ema"))
        if self.best is not None and self.best.consider(step, metrics):
            # NaN weights still score finitely (argmax 0, Dice 0): check them before keeping.
            assert_finite(self.checkpointer.finite_modules(), step)
            if self.strategy.is_main:
                self.best.save(self.strategy.unwrap(), self.ema, self.config)
        console.say(getattr(self, "progress", None), console.validation_line(
            step, self.plan.max_steps, metrics, self.best.record() if self.best else None),
            self.strategy.is_main)
        return metrics

    def _validate_weights(self, model, step: int, name: str) -> dict:
        """{'<name>_acc', '<name>_dice'} of ``model``, logged under <name>/."""
        metrics = validate(model, self.task_data, self.spec, self.strategy,
                           self.config.data.eval_batch_size, self.config.data.image_size,
                           on_chunk=lambda: self.strategy.progress(step))
        self.logger.scalars({k.removeprefix("val_"): v for k, v in metrics.items()}, step,
                            f"{name}/")
        return {k.replace("val", name, 1): v for k, v in metrics.items()}

    def model_for_eval(self):
        return self.strategy.unwrap()

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


def _atomic_json(data: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
