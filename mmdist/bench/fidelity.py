"""Fidelity on real X-rays: ``python -m mmdist.bench fidelity [--data ../shared/data] ...``.

Trains the paper's arms on the public subsets in ``--data`` (configs/paper/subset.yaml: Kermany
224 px for classification with 100 labels and the rest of its training split unlabeled, Shenzhen
with 10 labeled masks, the rest unlabeled) at ``--size`` px, for every seed, and scores each arm
at every step budget on three test sets the runs never trained on: the Shenzhen test split
(Dice), the 13 Montgomery images (cross-domain Dice) and the patient-disjoint Kermany test split
(accuracy, AUC).

One run per (arm, seed) trains the largest budget; the smaller budgets are its checkpoints at
those steps. That is exact, not an approximation: the learning rate only drops every
``optim.lr_step_epochs`` epochs (an epoch here is ~365 steps x 8 = far past the budgets),
validation draws no random numbers, so a run of B steps is the first B steps of the longer one.
Each budget is scored three ways where they apply: the raw weights at step B, their moving
average (``model.ema_decay``), and the checkpoint of the best validation up to step B on the
average's weights (``trainer.select_by``, the variant's default metric).

Writes OUT/fidelity.md and OUT/fidelity.json: mean +- std over seeds per (arm, weights, budget),
and a paired t-test (scipy.stats.ttest_rel, over seeds) of each arm against multimix detached;
Montgomery Dice is also paired per (seed, image), 13 images x seeds pairs.
``--reuse OLD/fidelity.json ...`` takes the (arm, seed) runs an earlier benchmark scored with the
same settings (recipe, size, validation interval, EMA decay, overrides) at every budget asked for,
so a benchmark too long for one sitting is run a few seeds at a time and tabled together.
Not part of the test suite: about four hours on two CPU cores for the defaults (81 minutes for
``--budgets 100 150 200``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "paper" / "subset.yaml"
ARMS = {
    "multimix detached": ["model.variant=multimix", "model.saliency=detached"],
    "multimix differentiable": ["model.variant=multimix", "model.saliency=differentiable"],
    "multimix no bridge": ["model.variant=multimix", "model.saliency=none"],
    "umtl_ssl": ["model.variant=umtl_ssl"],
    "unet": ["model.variant=unet"],
    "enc_ssl": ["model.variant=enc_ssl"],
}
PAPER_ARMS = list(ARMS)
"""What a run without --arms trains: the paper's arms above."""
REFERENCE = "multimix detached"
_MULTIMIX = ARMS[REFERENCE]
# Beyond the paper (issue 17): each addition alone on the reference arm, the segmentation-only
# baselines with the same masks and unlabeled images, and one arm with every addition.
ARMS.update({
    "multimix w2s": [*_MULTIMIX, "losses.seg_unlabeled=w2s"],
    "multimix w2s fp": [*_MULTIMIX, "losses.seg_unlabeled=w2s", "losses.w2s_feature_dropout=0.5"],
    "multimix appearance": [*_MULTIMIX, "data.augment.seg_appearance=true"],
    "multimix freematch": [*_MULTIMIX, "losses.threshold=freematch"],
    "multimix softmatch": [*_MULTIMIX, "losses.threshold=softmatch"],
    "multimix dist_align": [*_MULTIMIX, "losses.dist_align=true"],
    "multimix all": [*_MULTIMIX, "losses.seg_unlabeled=w2s", "losses.w2s_feature_dropout=0.5",
                     "data.augment.seg_appearance=true", "losses.threshold=freematch",
                     "losses.dist_align=true"],
    "unet appearance": ["model.variant=unet", "data.augment.seg_appearance=true"],
    "unet_w2s": ["model.variant=unet_w2s", "losses.w2s_feature_dropout=0.5"],
    "unet_w2s appearance": ["model.variant=unet_w2s", "losses.w2s_feature_dropout=0.5",
                            "data.augment.seg_appearance=true"],
})
# In-domain test sets are named by their dataset (the folder's name), cross-domain ones by entry.
METRICS = (("shenzhen-lungseg", "dice", "Shenzhen Dice"), ("montgomery", "dice", "Montgomery Dice"),
           ("kermany-pneumonia-224", "acc", "Kermany acc"),
           ("kermany-pneumonia-224", "auc", "Kermany AUC"))
WEIGHTS = ("raw", "ema", "selected")


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="folder with kermany-pneumonia-224, shenzhen-lungseg, montgomery-lungseg")
    parser.add_argument("--out", default="runs/fidelity")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[150, 300, 600])
    parser.add_argument("--arms", nargs="+", default=PAPER_ARMS, choices=list(ARMS),
                        help="default: the paper's arms; the others (w2s, appearance, threshold "
                             "schedules, distribution alignment, unet_w2s) on request")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--val-every", type=int, default=50,
                        help="validation (and checkpoint) period; budgets must be multiples")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[],
                        help="more overrides for every run (its own row label: see --label)")
    parser.add_argument("--label", default="", help="suffix of every arm name, e.g. for --extra")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="FIDELITY_JSON",
                        help="earlier OUT/fidelity.json files: an (arm, seed) scored there with "
                             "the same settings at every budget asked for is taken from there, "
                             "not trained again (a benchmark split over days or machines)")


def _run_config(args, arm: str, seed: int, run_dir: Path):
    from mmdist.config import load_config

    last = max(args.budgets)
    overrides = [f"output_dir={run_dir}", f"seed={seed}", f"data.image_size={args.size}",
                 "trainer.max_epochs=null", f"trainer.max_steps={last}",
                 f"trainer.val_every={args.val_every}", f"trainer.checkpoint_every={args.val_every}",
                 "trainer.keep_checkpoints=1000", "trainer.image_log_every=0",
                 "trainer.progress=false", f"trainer.threads={args.threads}",
                 f"model.ema_decay={args.ema_decay}", "engine.device=cpu", *ARMS[arm], *args.extra]
    return load_config(RECIPE, overrides)


def _validations(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: {'val_acc', 'val_dice', 'val_ema_acc', ...}} read back from the run's TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    out: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        prefix, _, name = tag.partition("/")
        if prefix in ("val", "val_ema") and name in ("acc", "dice"):
            for event in events.Scalars(tag):
                out.setdefault(event.step, {})[f"{prefix}_{name}"] = event.value
    return out


def _selected_step(validations: dict, budget: int, metric: str, run_dir: Path) -> int:
    """The step <= budget whose EMA validation scores best (the earliest of ties), among the steps
    whose checkpoint is still there (an earlier benchmark keeps its own budgets' only)."""
    from mmdist.engine import checkpoint as ckpt
    from mmdist.engine.selection import score

    steps = sorted(s for s in validations
                   if s <= budget and ckpt.checkpoint_path(run_dir, s).is_file())
    return max(steps, key=lambda s: (score(validations[s], metric, "ema"), -s))


def _scores(summary: dict) -> dict[str, float]:
    out = {}
    for test_set, metric, label in METRICS:
        found = summary["test_sets"].get(test_set, {}).get("metrics", {}).get(metric)
        if found is not None:
            out[label] = float(found)
    return out


PER_IMAGE = "Montgomery per-image Dice"
"""{image name: Dice} of the 13 Montgomery images, for the per-image pairing over seeds."""


def _per_image_dice(path: Path) -> dict[str, float]:
    """{name: dice} from evaluate's per_image CSV ({} when the variant has no decoder)."""
    import csv

    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["name"]: float(row["dice"]) for row in csv.DictReader(handle)}


def per_image_pairs(seeds: dict, reference: dict, key: str) -> tuple[list[float], list[float]]:
    """(arm, reference) Montgomery Dice paired by (seed, image) over the seeds both ran: 13
    images x 5 seeds = 65 pairs resolve differences the 5 seed means cannot."""
    arm_values, ref_values = [], []
    for seed in sorted(set(seeds) & set(reference)):
        ours, theirs = seeds[seed][key].get(PER_IMAGE, {}), reference[seed][key].get(PER_IMAGE, {})
        for name in sorted(set(ours) & set(theirs)):
            arm_values.append(ours[name])
            ref_values.append(theirs[name])
    return arm_values, ref_values


def _settings(args, arm: str) -> dict:
    """What makes two runs of one (arm, seed) the same run, whatever the budgets: a run of B steps
    is the first B steps of a longer one (module docstring), so only these must match to reuse."""
    return {"recipe": RECIPE.name, "size": args.size, "val_every": args.val_every,
            "ema_decay": args.ema_decay, "overrides": [*ARMS[arm], *args.extra]}


def load_reusable(args) -> dict[tuple[str, int], dict]:
    """{(arm, seed): result} from the --reuse files whose settings equal this benchmark's and whose
    scores cover every budget asked for; one line names each file and what it gave."""
    wanted = {arm + args.label: arm for arm in args.arms}
    found: dict[tuple[str, int], dict] = {}
    for name in args.reuse:
        path = Path(name)
        try:
            results = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"fidelity: --reuse {path}: not a fidelity.json ({exc})") from None
        taken = []
        for result in results:
            arm, seed = result.get("arm"), result.get("seed")
            if arm not in wanted or seed not in args.seeds or (arm, seed) in found:
                continue
            keys = {f"{w}@{b}" for w in WEIGHTS for b in args.budgets}
            if result.get("settings") == _settings(args, wanted[arm]) and \
                    keys <= set(result.get("scores", {})):
                found[arm, seed] = {**result, "reused": str(path)}
                taken.append(f"{arm} seed {seed}")
        print(f"fidelity: --reuse {path}: {len(taken)} run(s) taken"
              + (f" ({', '.join(taken)})" if taken else
                 " (none matches these arms, seeds, budgets and settings)"))
    return found


def _one_run(args, arm: str, seed: int, out: Path) -> dict:
    """Train (or reuse a finished) run and score every budget; {(weights, budget): scores}."""
    from mmdist.engine import checkpoint as ckpt
    from mmdist.engine.trainer import Trainer
    from mmdist.evaluation.evaluate import evaluate_run

    run_dir = out / "runs" / f"{arm.replace(' ', '_')}{args.label}_seed{seed}"
    config = _run_config(args, arm, seed, run_dir)
    summary_path = run_dir / "summary.json"
    # Reused only when it reached every budget and kept their checkpoints: an earlier benchmark
    # with smaller budgets is trained on from its newest checkpoint (resume is exact).
    done = summary_path.is_file() and \
        json.loads(summary_path.read_text()).get("status") == "completed" and \
        all(ckpt.checkpoint_path(run_dir, b).is_file() for b in args.budgets)
    tick = time.perf_counter()
    if not done:
        config.trainer.resume = True  # an interrupted benchmark continues where it stopped
        Trainer(config).fit()
    train_s = time.perf_counter() - tick
    metric = config.trainer.selection_metric(*_heads(config))
    validations = _validations(run_dir)
    scores, scored = {}, {}  # scored: (step, weights) -> scores; selection often picks a budget
    for budget in args.budgets:
        for weights in WEIGHTS:
            step = budget if weights != "selected" else \
                _selected_step(validations, budget, metric, run_dir)
            used = "raw" if weights == "raw" else "ema"
            if (step, used) not in scored:
                summary = evaluate_run(run_dir, ckpt.checkpoint_path(run_dir, step),
                                       plots_on=False, weights=used)
                scored[step, used] = _scores(summary)
                scored[step, used][PER_IMAGE] = _per_image_dice(
                    run_dir / "eval" / "per_image" / "montgomery.csv")
            scores[f"{weights}@{budget}"] = {"step": step, **scored[step, used]}
    keep = {ckpt.checkpoint_path(run_dir, b).name for b in args.budgets}
    for _, path in ckpt.list_checkpoints(run_dir):  # ~30 MB each: keep the budgets' only
        if path.name not in keep:
            path.unlink()
    return {"arm": arm + args.label, "seed": seed, "train_seconds": train_s, "reused": done,
            "run_dir": str(run_dir), "settings": _settings(args, arm), "scores": scores}


def _heads(config) -> tuple[bool, bool]:
    from mmdist.model import VARIANTS

    spec = VARIANTS[config.model.variant]
    return spec.classifier, spec.decoder


def _table(results: list[dict], budgets: list[int]) -> tuple[str, list[dict]]:
    """Markdown: one row per (arm, weights, budget), mean +- std over seeds and the paired p
    against the reference arm on the same seeds."""
    from scipy.stats import ttest_rel

    by_arm: dict[str, dict[int, dict]] = {}
    for result in results:
        by_arm.setdefault(result["arm"], {})[result["seed"]] = result["scores"]
    labels = [label for _, _, label in METRICS]
    head = "| arm | weights | steps | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (3 + len(labels))]
    rows = []
    reference = next((a for a in by_arm if a.startswith(REFERENCE)), None)
    for arm, seeds in by_arm.items():
        for weights in WEIGHTS:
            for budget in budgets:
                key = f"{weights}@{budget}"
                cells, row = [], {"arm": arm, "weights": weights, "steps": budget}
                for label in labels:
                    values = [seeds[s][key][label] for s in sorted(seeds) if label in seeds[s][key]]
                    if not values:
                        cells.append("-")
                        continue
                    mean = statistics.fmean(values)
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    cell = f"{mean:.3f} ± {std:.3f}"
                    row[label] = {"mean": mean, "std": std, "values": values}
                    if reference and arm != reference:
                        pairs = [(seeds[s][key][label], by_arm[reference][s][key][label])
                                 for s in sorted(seeds) if s in by_arm[reference]
                                 and label in seeds[s][key]
                                 and label in by_arm[reference][s][key]]
                        if len(pairs) > 1:
                            p = ttest_rel(*zip(*pairs)).pvalue
                            row[label]["p_vs_reference"] = None if math.isnan(p) else float(p)
                            cell += f" (p={p:.2f})" if not math.isnan(p) else ""
                        arm_values, ref_values = per_image_pairs(seeds, by_arm[reference], key) \
                            if label == "Montgomery Dice" else ([], [])
                        if len(arm_values) > 1:
                            p = ttest_rel(arm_values, ref_values).pvalue
                            row[label]["p_per_image_vs_reference"] = \
                                None if math.isnan(p) else float(p)
                            row[label]["per_image_pairs"] = len(arm_values)
                            cell += f" (per image p={p:.2g}, n={len(arm_values)})" \
                                if not math.isnan(p) else ""
                    cells.append(cell)
                rows.append(row)
                lines.append(f"| {arm} | {weights} | {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def _write(args, out: Path, results: list[dict], started: float):
    """Rewrite the table after every run, so an interrupted benchmark leaves what it has."""
    text, rows = _table(results, sorted(args.budgets))
    wall = time.perf_counter() - started
    seeds = sorted({r["seed"] for r in results})
    note = (f"\n{len(results)} runs ({len(args.arms)} arms, seeds {seeds}) at "
            f"{args.size} px, budgets {sorted(args.budgets)} steps, EMA decay {args.ema_decay}; "
            f"p: paired t-test over seeds against {REFERENCE} (Montgomery also per image: "
            f"pairs of (seed, image)); wall time {wall / 60:.0f} min, "
            f"load average {os.getloadavg()[0]:.2f}.\n")
    (out / "fidelity.md").write_text(text + note)
    (out / "fidelity.json").write_text(json.dumps({"results": results, "rows": rows,
                                                   "wall_seconds": wall}, indent=1))
    return text, note, rows, wall


def run(args) -> dict:
    import torch

    data = Path(args.data).resolve()
    for name in ("kermany-pneumonia-224", "shenzhen-lungseg", "montgomery-lungseg"):
        if not (data / name / "labels.csv").is_file():
            raise SystemExit(f"fidelity: {data / name}/labels.csv not found (--data)")
    if any(b % args.val_every for b in args.budgets):
        raise SystemExit(f"fidelity: every budget must be a multiple of --val-every "
                         f"({args.val_every})")
    os.environ["MMDIST_DATA"] = str(data)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reusable = load_reusable(args)
    started = time.perf_counter()
    results = []
    for seed in args.seeds:  # seeds outermost: a benchmark cut short still has whole seeds
        for arm in args.arms:
            reused = reusable.get((arm + args.label, seed))
            results.append(reused or _one_run(args, arm, seed, out))
            text, note, rows, wall = _write(args, out, results, started)
    print(text + note)
    return {"table": str(out / "fidelity.md"), "runs": len(results), "wall_seconds": wall}
