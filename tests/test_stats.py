"""The paired bootstrap: a method against itself has a zero interval, intervals cover the truth, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from hydralib import stats


def _row(name, hits, graded=0.5):
    return {"name": name, "scores": {t: {"hits": "".join("1" if x else "0" for x in h), "graded": graded}
                                     for t, h in hits.items()}}


def test_a_method_against_itself_has_a_zero_difference_interval():
    rng = np.random.default_rng(0)
    ref = {f"t{i}": rng.random(100) < 0.9 for i in range(5)}
    method = {t: h & (rng.random(100) < 0.8) for t, h in ref.items()}
    out = stats.compare_rows(_row("m", method), _row("m", method), _row("individual", ref), B=500)
    assert out["ci"] == (0.0, 0.0) and out["difference"] == 0 and out["verdict"] == "within noise"


def test_the_reference_against_itself_is_one_with_a_zero_width_interval():
    rng = np.random.default_rng(1)
    ref = {f"t{i}": rng.random(50) < 0.7 for i in range(4)}
    summary = stats.summarise([_row("individual", ref)], B=300)
    m = summary["methods"]["individual"]
    assert m["relative"] == 1.0 and m["ci"] == (1.0, 1.0) and m["graded_relative"] == 1.0


def test_the_interval_covers_the_true_relative_performance_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    p_ref, p_m, n, tasks = np.array([0.9, 0.8, 0.95, 0.7]), np.array([0.6, 0.7, 0.9, 0.5]), 100, 4
    truth = float(np.mean(p_m / p_ref))
    covered, trials = 0, 200
    for k in range(trials):
        ref = {f"t{i}": rng.random(n) < p_ref[i] for i in range(tasks)}
        # the method keeps a correct reference answer with probability p_m / p_ref (paired, as a compression is)
        m = {t: ref[t] & (rng.random(n) < p_m[i] / p_ref[i]) for i, t in enumerate(ref)}
        lo, hi = stats.interval(stats.relative_draws(m, ref, stats.bootstrap_indices({t: n for t in ref}, 400, k)))
        covered += lo <= truth <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_verdicts_follow_the_sign_of_the_interval():
    assert stats.verdict((0.01, 0.05)) == "better"
    assert stats.verdict((-0.05, -0.01)) == "worse"
    assert stats.verdict((-0.01, 0.02)) == "within noise"


def test_a_clearly_worse_method_is_called_worse():
    rng = np.random.default_rng(3)
    ref = {f"t{i}": rng.random(100) < 0.95 for i in range(10)}
    good = dict(ref)
    bad = {t: h & (rng.random(100) < 0.5) for t, h in ref.items()}
    assert stats.compare_rows(_row("bad", bad), _row("good", good), _row("individual", ref), B=500)["verdict"] == "worse"


def test_tasks_whose_reference_is_zero_are_left_out():
    ref = {"a": np.array([True, True]), "b": np.array([False, False])}
    assert stats.relative_point({"a": np.array([True, False]), "b": np.array([True, True])}, ref) == pytest.approx(0.5)


def test_hits_array_reads_bit_strings():
    assert stats.hits_array("0110").tolist() == [False, True, True, False]
