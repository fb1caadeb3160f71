"""The fidelity table pairs Montgomery Dice per (seed, image) against the reference arm: 13 images
x seeds pairs resolve a small, consistent difference the few seed means cannot."""

import numpy as np

from mmdist.bench.fidelity import PER_IMAGE, REFERENCE, _table, per_image_pairs


def fake_results(shift: float, seeds=(0, 1, 2)) -> list[dict]:
    rng = np.random.default_rng(0)
    results = []
    for seed in seeds:
        base = {f"img{i}": float(v) for i, v in enumerate(rng.uniform(0.6, 0.9, 13))}
        seed_offset = float(rng.normal(0, 0.05))  # seeds differ far more than the arms do
        for arm, delta in ((REFERENCE, 0.0), ("multimix w2s", shift)):
            per_image = {k: v + seed_offset + delta + float(rng.normal(0, 0.002))
                         for k, v in base.items()}
            scores = {"Montgomery Dice": float(np.mean(list(per_image.values()))),
                      PER_IMAGE: per_image}
            results.append({"arm": arm, "seed": seed,
                            "scores": {f"{w}@150": scores for w in ("raw", "ema", "selected")}})
    return results


def test_pairs_are_matched_by_seed_and_image_name():
    results = fake_results(0.02)
    by_arm = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r["scores"]
    ours, theirs = per_image_pairs(by_arm["multimix w2s"], by_arm[REFERENCE], "raw@150")
    assert len(ours) == len(theirs) == 13 * 3
    assert np.allclose(np.subtract(ours, theirs), 0.02, atol=0.01)  # same image, same seed


def test_table_reports_the_per_image_test_beside_the_seed_test():
    _, rows = _table(fake_results(0.02), [150])
    (row,) = [r for r in rows if r["arm"] == "multimix w2s" and r["weights"] == "raw"]
    montgomery = row["Montgomery Dice"]
    assert montgomery["per_image_pairs"] == 39
    assert montgomery["p_per_image_vs_reference"] < 1e-6
    _, rows = _table(fake_results(0.0), [150])
    (row,) = [r for r in rows if r["arm"] == "multimix w2s" and r["weights"] == "raw"]
    assert row["Montgomery Dice"]["p_per_image_vs_reference"] > 1e-3  # no difference: no claim
