"""Confidence intervals for relative performance: a paired bootstrap over test examples.

Exact match on n examples a task is a proportion; with n = 100 one task's
standard error is up to 0.05, and the mean over tasks moves by about 0.01 from
sampling alone. So every relative performance here carries a 95 % interval:

1. resample the test examples *within each task*, with replacement (``B``
   resamples, fixed seed), with the same indices for every method and for the
   reference adapters (the pairing);
2. on each resample recompute the relative performance
   ``mean_t EM_method(t) / EM_reference(t)`` (tasks whose resampled reference
   score is 0 are left out of that resample's mean);
3. the interval is the 2.5 and 97.5 percentiles. Two methods are compared by the
   interval of the difference of their relative performances on the same
   resamples; a verdict says one is better only when that interval excludes 0.

Example
-------
>>> import numpy as np
>>> ref = {"t": np.array([1, 1, 1, 0] * 25, bool)}
>>> draws = bootstrap_indices({"t": 100}, B=200, seed=0)
>>> rel = relative_draws(ref, ref, draws)
>>> float(rel.min()), float(rel.max())
(1.0, 1.0)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

B_DEFAULT = 2000
SEED = 0


def hits_array(bits: str) -> np.ndarray:
    """``"0110" -> array([False, True, True, False])`` (the per-example exact match stored in result rows)."""
    return np.frombuffer(bits.encode("ascii"), dtype=np.uint8) == ord("1")


def bootstrap_indices(sizes: Mapping[str, int], B: int = B_DEFAULT, seed: int = SEED) -> dict[str, np.ndarray]:
    """``{task: (B, n_task) int array}`` of example indices drawn with replacement, one generator for all tasks."""
    rng = np.random.default_rng(seed)
    return {t: rng.integers(0, n, size=(B, n)) for t, n in sizes.items()}


def relative_point(hits: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Mean over tasks of ``mean(hits[t]) / mean(reference[t])`` (tasks with reference score 0 left out)."""
    ratios = [hits[t].mean() / reference[t].mean() for t in reference if reference[t].mean() > 0]
    return float(np.mean(ratios)) if ratios else float("nan")


def relative_draws(hits: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(B,)`` relative performance of ``hits`` on each resample of ``draws`` (paired with ``reference``)."""
    num = np.stack([hits[t][draws[t]].mean(1) for t in reference], 1)  # (B, tasks)
    den = np.stack([reference[t][draws[t]].mean(1) for t in reference], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = num / np.where(den > 0, den, 1)
        kept = (den > 0).sum(1)
        return np.where(kept > 0, np.where(den > 0, ratio, 0).sum(1) / np.maximum(kept, 1), np.nan)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``samples`` at ``level``."""
    if np.isnan(samples).all():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def verdict(diff_ci: Sequence[float]) -> str:
    """``"better"`` when the interval of (a - b) is above 0, ``"worse"`` when below, else ``"within noise"``."""
    lo, hi = diff_ci
    return "better" if lo > 0 else "worse" if hi < 0 else "within noise"


def compare(hits_a, hits_b, reference, draws) -> dict:
    """Paired difference of relative performance, a - b: point, 95 % interval, verdict."""
    diff = relative_draws(hits_a, reference, draws) - relative_draws(hits_b, reference, draws)
    ci = interval(diff)
    return {"difference": relative_point(hits_a, reference) - relative_point(hits_b, reference), "ci": ci,
            "verdict": verdict(ci)}


def summarise(rows: Sequence[dict], reference: str = "individual", B: int = B_DEFAULT, seed: int = SEED) -> dict:
    """Relative performance with its interval for every row (rows carry ``scores[task]["hits"]`` bit strings).

    Returns ``{"B", "seed", "methods": {name: {"relative", "ci", "exact_match", "graded", "graded_relative"}}}``;
    the graded score (fraction of answer tokens right) is reported as a mean and relative to the reference's.
    """
    by_name = {r["name"]: r for r in rows}
    if reference not in by_name:
        raise ValueError(f"hydralib.stats.summarise: no reference row {reference!r}")
    ref_row = by_name[reference]
    tasks = list(ref_row["scores"])
    ref = {t: hits_array(ref_row["scores"][t]["hits"]) for t in tasks}
    draws = bootstrap_indices({t: len(ref[t]) for t in tasks}, B, seed)
    out = {}
    for row in rows:
        hits = {t: hits_array(row["scores"][t]["hits"]) for t in tasks}
        samples = relative_draws(hits, ref, draws)
        graded = float(np.mean([row["scores"][t]["graded"] for t in tasks]))
        graded_ref = float(np.mean([ref_row["scores"][t]["graded"] for t in tasks]))
        out[row["name"]] = {"relative": relative_point(hits, ref), "ci": interval(samples),
                            "exact_match": float(np.mean([hits[t].mean() for t in tasks])),
                            "graded": graded, "graded_relative": graded / graded_ref}
    return {"B": B, "seed": seed, "reference": reference, "methods": out}


def compare_rows(row_a: dict, row_b: dict, reference_row: dict, B: int = B_DEFAULT, seed: int = SEED) -> dict:
    """:func:`compare` on two result rows (same resamples as :func:`summarise` with the same ``B`` and ``seed``)."""
    tasks = list(reference_row["scores"])
    ref = {t: hits_array(reference_row["scores"][t]["hits"]) for t in tasks}
    a = {t: hits_array(row_a["scores"][t]["hits"]) for t in tasks}
    b = {t: hits_array(row_b["scores"][t]["hits"]) for t in tasks}
    return compare(a, b, ref, bootstrap_indices({t: len(ref[t]) for t in tasks}, B, seed))


def mean_draws(hits: Mapping[str, np.ndarray], draws: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(B,)`` mean over tasks of exact match on each resample (absolute, no reference)."""
    return np.stack([hits[t][draws[t]].mean(1) for t in draws], 1).mean(1)


def compare_means(row_a: dict, row_b: dict, B: int = B_DEFAULT, seed: int = SEED) -> dict:
    """Paired difference of mean exact match (a - b) of two rows scored on the same examples (e.g. two recipes'
    own adapters): point, 95 % interval, verdict."""
    tasks = list(row_b["scores"])
    a = {t: hits_array(row_a["scores"][t]["hits"]) for t in tasks}
    b = {t: hits_array(row_b["scores"][t]["hits"]) for t in tasks}
    draws = bootstrap_indices({t: len(b[t]) for t in tasks}, B, seed)
    ci = interval(mean_draws(a, draws) - mean_draws(b, draws))
    point = float(np.mean([a[t].mean() for t in tasks]) - np.mean([b[t].mean() for t in tasks]))
    return {"difference": point, "ci": ci, "verdict": verdict(ci)}
