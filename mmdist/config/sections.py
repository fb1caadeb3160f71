"""The model, data, loss, optimizer and trainer sections of the config tree (the data sources
themselves are in mmdist.config.data_sources).

Each section is a dataclass whose fields carry their defaults and docstrings and whose
``__post_init__`` validates them, raising ConfigError with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from mmdist.config.errors import ConfigError, check
from mmdist.config.loss_section import LossConfig  # noqa: F401  (re-exported: its own module)
from mmdist.config.data_sources import SourceConfig, SyntheticDomainConfig, UnlabeledSourceConfig
from mmdist.config.variants import VARIANTS, resolve_saliency

SaliencyMode = Literal["auto", "none", "detached", "differentiable"]


@dataclass
class ModelConfig:
    variant: str = "multimix"
    """One of the paper's nine models (see mmdist.config.variants.VARIANTS)."""
    saliency: SaliencyMode = "auto"
    """Saliency bridge: 'auto' takes the variant's own (detached for the bridged variants, none
    otherwise); 'detached' is the reference code's constant decoder input; 'differentiable' keeps
    the saliency in the graph so the segmentation loss trains the encoder through it."""
    width: float = 1.0
    """Channel multiplier (1.0 = the paper's 16..256 channels); small values for quick tests."""
    dropout: float = 0.25
    saliency_inner_scale: float = 1024.0
    """Fixed factor the class score is multiplied by before the inner gradient under fp16 (and
    divided out after), so small input gradients do not flush to zero. Keep well below 2**16."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights (0 = off; e.g. 0.999). Updated after every
    optimizer step taken, with the warm-up min(ema_decay, (1 + t) / (10 + t)) at the t-th update
    (mmdist.engine.ema); validated beside the raw weights, saved in checkpoints, and what
    evaluate and predict use by default."""

    def __post_init__(self) -> None:
        check(self.variant in VARIANTS, "model.variant",
               f"unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        check(self.width > 0, "model.width", "must be > 0")
        check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        check(1.0 <= self.saliency_inner_scale <= 2.0**14, "model.saliency_inner_scale",
               "must be in [1, 16384] (fp16 overflows the seed gradient near 2**16)")
        check(0.0 <= self.ema_decay < 1.0, "model.ema_decay", "must be in [0, 1) (0 = off)")
        resolve_saliency(self.variant, self.saliency)  # raises naming model.saliency

    @property
    def resolved_saliency(self) -> str:
        """The saliency mode in force: 'auto' resolved through the variant table."""
        return resolve_saliency(self.variant, self.saliency)

    @property
    def streams(self) -> tuple[str, ...]:
        """The training streams the variant reads (mmdist.config.variants), so that the data
        layer loads only the pools a run reads."""
        return VARIANTS[self.variant].streams


Budget = Union[int, Literal["full"]]


@dataclass
class BudgetConfig:
    """Label budgets and splits (the paper's |D_l^c| and |D_l^s|)."""

    classification_labeled: Budget = 100
    """Labeled classification images; the rest of the training split is the unlabeled pool
    (data.unlabeled replaces it). With nothing left (e.g. 'full'), the unlabeled streams read
    the labeled training images with their labels hidden, as FixMatch does."""
    segmentation_labeled: Budget = 10
    """Labeled segmentation images (masks); the rest of the training split is unlabeled (or,
    with none left, the labeled images with their masks hidden)."""
    val_fraction: float = 0.1
    """Fraction of each source's images (whole patients) held out for validation."""
    test_fraction: float = 0.2
    """Fraction of each source's images (whole patients) held out as its in-domain test set."""
    segmentation_val_fraction: Optional[float] = None
    """The segmentation source's own val_fraction (null: val_fraction), e.g. JSRT's paper split
    111/13/123 next to Kermany's."""
    segmentation_test_fraction: Optional[float] = None
    """The segmentation source's own test_fraction (null: test_fraction)."""

    def __post_init__(self) -> None:
        for name in ("classification_labeled", "segmentation_labeled"):
            value = getattr(self, name)
            check(value == "full" or (isinstance(value, int) and value >= 1), f"data.budget.{name}",
                   f"must be a positive integer or 'full', got {value!r}")
        for prefix in ("", "segmentation_"):
            val, test = getattr(self, prefix + "val_fraction"), getattr(self, prefix + "test_fraction")
            check(val is None or 0 < val < 0.5, f"data.budget.{prefix}val_fraction",
                  "must be in (0, 0.5)")
            check(test is None or 0 <= test < 0.5, f"data.budget.{prefix}test_fraction",
                  "must be in [0, 0.5)")

    def fractions(self, task: str) -> tuple[float, float]:
        """(val_fraction, test_fraction) of ``task``'s source ('classification' or
        'segmentation')."""
        val, test = self.val_fraction, self.test_fraction
        if task == "segmentation":
            val = val if self.segmentation_val_fraction is None else self.segmentation_val_fraction
            test = test if self.segmentation_test_fraction is None \
                else self.segmentation_test_fraction
        return val, test


@dataclass
class AugmentConfig:
    """Weak and strong views (the policy itself lives in mmdist.augment.policy)."""

    backend: Literal["torch", "dali"] = "torch"
    device: Literal["cpu", "gpu"] = "cpu"
    strong_ops: int = 2
    """RandAugment: number of ops drawn per image."""
    strong_magnitude: int = 10
    """RandAugment: maximum magnitude (1..10)."""
    strong_apply: Literal["always", "half"] = "always"
    """'always' applies every drawn op (FixMatch); 'half' applies each with p=0.5 (the reference)."""
    pad_fraction: float = 0.125
    """Reflect padding of the weak random crop, as a fraction of the image size."""
    threads: int = 2
    """CPU threads of the DALI pipeline (backend 'dali'); the torch backend uses data.workers."""
    seg_appearance: bool = False
    """Appearance (intensity) augmentation of the segmentation streams after their weak view:
    gamma, brightness, contrast, blur, a random shallow convolution (GIN) and noise, each with
    probability appearance_p (mmdist.augment.policy.APPEARANCE); masks keep the geometry only."""
    appearance_p: float = 0.5
    """Probability of each appearance op (data.augment.seg_appearance)."""

    def __post_init__(self) -> None:
        check(1 <= self.strong_ops <= 14, "data.augment.strong_ops", "must be in [1, 14]")
        check(self.threads >= 1, "data.augment.threads", "must be >= 1")
        check(1 <= self.strong_magnitude <= 10, "data.augment.strong_magnitude",
              "must be in [1, 10]")
        check(0 <= self.pad_fraction <= 0.5, "data.augment.pad_fraction", "must be in [0, 0.5]")
        check(0 <= self.appearance_p <= 1, "data.augment.appearance_p", "must be in [0, 1]")


@dataclass
class DataConfig:
    image_size: int = 256
    """Square input size in pixels; a multiple of 32 (five encoder levels and the class pool)."""
    batch_size: int = 10
    """Images per stream per rank (the reference uses 10 for each of its five streams). Ignored
    when global_batch_size is set."""
    global_batch_size: Optional[int] = None
    """Images per stream over all ranks. When set, each rank takes global_batch_size / ranks
    (an error when that does not divide), so a run is the same step for step at any rank count."""
    eval_batch_size: int = 32
    classification: Optional[SourceConfig] = field(default_factory=SourceConfig)
    """null for a segmentation-only config (variants with a classifier then refuse to load)."""
    segmentation: SourceConfig = field(default_factory=lambda: SourceConfig(
        domain=SyntheticDomainConfig(gamma=1.3, contrast=0.85, brightness=0.05, noise=0.05)))
    unlabeled: Optional[UnlabeledSourceConfig] = None
    """The unlabeled classification pool from its own source (null: the rest of the
    classification training split). Read only by variants with unlabeled classification streams
    (FixMatch, MixMatch); its training images are then also what one epoch is, for every
    variant."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 0
    """Background processes that assemble batches (0 = in the training process)."""
    worker_start: Literal["default", "fork", "spawn", "forkserver"] = "default"
    """How batch workers start ('default': the platform's, forkserver from Python 3.14 on
    Linux). Every method reopens the memory-mapped pool in the worker instead of copying it."""

    def __post_init__(self) -> None:
        for name in ("classification", "segmentation", "unlabeled"):
            source = getattr(self, name)
            if source is not None:
                source.check_at(f"data.{name}")  # the sources name their full key from here
        check(self.image_size >= 32 and self.image_size % 32 == 0, "data.image_size",
               f"must be a positive multiple of 32, got {self.image_size}")
        check(self.batch_size >= 1, "data.batch_size", "must be >= 1")
        check(self.global_batch_size is None or self.global_batch_size >= 1,
              "data.global_batch_size", "must be >= 1 (or null: data.batch_size per rank)")
        check(self.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1")
        check(self.workers >= 0, "data.workers", "must be >= 0")
        check(self.unlabeled is None or self.classification is not None, "data.unlabeled",
              "needs data.classification (the pool feeds the classifier's unlabeled streams)")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """Adam learning rate for the whole global batch of one rank (see scale_lr)."""
    weight_decay: float = 0.0
    lr_step_epochs: int = 8
    """Multiply the learning rate by lr_gamma every this many epochs (the paper: 0.1 every 8)."""
    lr_gamma: float = 0.1
    scale_lr: Literal["none", "linear", "sqrt"] = "none"
    """Multiply lr by the number of ranks ('linear') or its square root: for runs that keep
    data.batch_size per rank, so that the global batch grows with the ranks. Not allowed with
    data.global_batch_size, whose global batch does not change."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", "must be > 0")
        check(self.lr_step_epochs >= 1, "optim.lr_step_epochs", "must be >= 1")
        check(0 < self.lr_gamma <= 1, "optim.lr_gamma", "must be in (0, 1]")


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = 2000
    """Length of the run in optimizer steps (set null to count max_epochs instead)."""
    max_epochs: Optional[int] = None
    """Length of the run in epochs (the paper counts epochs); needs max_steps: null."""
    steps_per_epoch: int = 0
    """Steps per epoch (schedule and max_epochs); 0 derives it from the data sources, the same
    for every variant and label budget: the classification training split (labeled and
    unlabeled) over the global batch, or the segmentation training split when the config has
    no classification source, or the training images of data.unlabeled when it is set."""
    val_every: int = 200
    select_by: Literal["auto", "val_acc", "val_bacc", "val_dice", "val_mean", "none"] = "auto"
    """Which validation metric keeps RUN_DIR/checkpoints/best.pt (when val_every > 0; on the EMA
    weights when model.ema_decay > 0): 'val_bacc' is the balanced accuracy (a classifier that
    calls every image one class scores 0.5); 'val_mean' is the mean of accuracy and Dice; 'auto'
    takes val_mean for variants with both heads, else the one metric the variant has; 'none'
    keeps no best.pt."""
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: Union[bool, str] = False
    """True resumes from the run directory's latest checkpoint; a path resumes from that file."""
    overwrite: bool = False
    """A run without resume into an output_dir that holds another run's checkpoints, TensorBoard
    events or summary.json stops at start; true removes those files first."""
    image_log_every: int = 200
    """TensorBoard images (inputs, saliency, predicted masks) every this many steps (0 = never)."""
    progress: bool = True
    threads: int = 0
    """torch intra-op threads per rank (0: SLURM_CPUS_PER_TASK, OMP_NUM_THREADS, or the node's
    CPUs over its ranks; see mmdist.engine.devices)."""
    stop_check_every: int = 5
    """Steps between the ranks' agreements on a stop signal (one all-reduce and one host sync
    each); a signalled run stops within this many steps, on the same step on every rank."""
    deterministic: bool = False
    """torch deterministic algorithms (CUDA: cuBLAS set up for it, and warn-only for the
    decoder's bilinear upsampling, which has no deterministic CUDA backward)."""

    def __post_init__(self) -> None:
        check(self.max_steps is None or self.max_steps >= 1, "trainer.max_steps",
              "must be >= 1 (or null with trainer.max_epochs)")
        check(self.max_epochs is None or self.max_epochs >= 1, "trainer.max_epochs", "must be >= 1")
        if self.max_steps is not None and self.max_epochs is not None:
            raise ConfigError(f"trainer.max_steps ({self.max_steps}) and trainer.max_epochs "
                              f"({self.max_epochs}) are both set; set one "
                              "(trainer.max_steps=null counts epochs)")
        check(self.max_steps is not None or self.max_epochs is not None, "trainer.max_steps",
              "set trainer.max_steps or trainer.max_epochs")
        for name in ("steps_per_epoch", "val_every", "log_every", "checkpoint_every",
                     "image_log_every", "threads"):
            check(getattr(self, name) >= 0, f"trainer.{name}", "must be >= 0")
        check(self.keep_checkpoints >= 1, "trainer.keep_checkpoints", "must be >= 1")
        check(self.stop_check_every >= 1, "trainer.stop_check_every", "must be >= 1")

    def selection_metric(self, classifier: bool, decoder: bool) -> Optional[str]:
        """select_by resolved for a variant with these heads (None: no best.pt is kept).
        Raises ConfigError when the variant lacks the head the metric needs."""
        if self.select_by == "none" or not self.val_every:
            return None
        if self.select_by == "auto":
            return "val_mean" if classifier and decoder else "val_acc" if classifier else "val_dice"
        needs = {"val_acc": (True, False), "val_bacc": (True, False), "val_dice": (False, True),
                 "val_mean": (True, True)}
        need_cls, need_seg = needs[self.select_by]
        check((classifier or not need_cls) and (decoder or not need_seg), "trainer.select_by",
              f"{self.select_by!r} needs a {'classifier' if need_cls and not classifier else 'decoder'}"
              " this variant does not have; use 'auto'")
        return self.select_by
