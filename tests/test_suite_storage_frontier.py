"""The storage frontier: a tiny end-to-end run (bytes from files, resumable, hash-keyed) and the report's verdicts.

The tiny preset's base model is random (every exact match is 0), so the report's verdicts are checked on a
synthetic result whose hits are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hydralib.suite import storage_frontier as sf
from hydralib.suite import storage_report as report


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    import os

    os.environ["HYDRALIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from hydralib.presets import get_preset

    preset = get_preset("tiny")
    yield preset, sf.storage_frontier_results(preset, n_eval=4, progress=False)
    os.environ.pop("HYDRALIB_CACHE")


def test_every_point_is_scored_per_example_and_its_bytes_are_the_file(tiny_result):
    from hydralib.compress import adapter_file_bytes
    from hydralib.suite.artifacts import load_zoo, zoo_dir

    preset, result = tiny_result
    names = [s.name for s in sf.storage_methods(preset)]
    assert [r["name"] for r in result["rows"]] == names and set(result["stats"]["methods"]) == set(names)
    aset = load_zoo(preset, "lora")
    ref = adapter_file_bytes([zoo_dir(preset) / "adapters" / "lora" / t for t in aset.tasks])
    assert result["reference_bytes"] == ref
    for row in result["rows"][:4]:
        cset, _ = sf.build(next(s for s in sf.storage_methods(preset) if s.name == row["name"]), aset, preset)
        assert row["bytes"] == cset.nbytes() and row["relative_bytes"] == pytest.approx(row["bytes"] / ref)
        assert all(len(v["hits"]) == 4 and set(v["hits"]) <= {"0", "1"} for v in row["scores"].values())
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["individual"]["relative_loss"] < 1e-12  # the fp16 adapters stored in fp16
    assert rows["int8"]["payload_bytes"] < rows["individual"]["payload_bytes"] / 1.8  # headers aside


def test_the_hydraopt_grid_covers_heads_by_rank(tiny_result):
    preset, result = tiny_result
    n = len(preset.tasks)
    heads = {g["heads"] for g in result["hydraopt_grid"]}
    assert heads == {k for k in sf.GRID_HEADS if k <= n} | {n}
    full = [g for g in result["hydraopt_grid"] if g["heads"] == n]
    losses = [g["relative_loss"] for g in sorted(full, key=lambda g: g["rank"])]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))  # more rank never fits worse


def test_stored_results_are_reused_and_rows_resume(tiny_result, monkeypatch):
    preset, result = tiny_result
    monkeypatch.setattr(sf, "_row", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert sf.storage_frontier_results(preset, n_eval=4, stored_only=True)["hash"] == result["hash"]
    again = sf.storage_frontier_results(preset, n_eval=4, recompute=True, progress=False)  # rows from the cache
    assert [r["scores"] for r in again["rows"]] == [r["scores"] for r in result["rows"]]
    assert sf.storage_frontier_results(preset, n_eval=3, stored_only=True) is None


def test_the_report_runs_on_a_result_without_signal(tiny_result):
    _, result = tiny_result
    assert report.finding_lines(result) and len(report.budget_table(result)) == len(report.BUDGETS)


def _synthetic(rows_spec, n=100, tasks=4, seed=0):
    """A result with known hits: ``rows_spec = [(name, family, params, relative bytes, keep probability)]``."""
    rng = np.random.default_rng(seed)
    ref = {f"t{i}": rng.random(n) < 0.9 for i in range(tasks)}
    rows = []
    for name, family, params, size, keep in rows_spec:
        hits = {t: h & (rng.random(n) < keep) for t, h in ref.items()}
        rows.append({"name": name, "family": family, "params": params, "bytes": int(size * 1e6),
                     "relative_bytes": size, "relative_loss": 1 - keep,
                     "scores": {t: {"hits": "".join("1" if x else "0" for x in h), "graded": float(h.mean())}
                                for t, h in hits.items()}})
    from hydralib.stats import summarise

    return {"rows": rows, "stats": summarise(rows, B=400), "reference_bytes": 10 ** 6,
            "hydraopt_grid": [{"heads": 1, "rank": 8, "relative_loss": 0.5, "relative_bytes": 0.1}]}


def test_budgets_verdicts_and_composition_on_a_result_with_known_hits():
    result = _synthetic([("individual", "individual", {}, 1.0, 1.0),
                         ("int4", "quantize", {"codec": "int4"}, 0.25, 1.0),
                         ("hydraopt-task-r8", "hydraopt", {"heads": "task", "rank": 8}, 0.4, 0.7),
                         ("hydraopt-task-r8+int4", "hydraopt", {"heads": "task", "rank": 8, "codec": "int4"}, 0.1, 0.7),
                         ("dare_ties", "merge", {}, 0.025, 0.1)])
    v = report.verdicts(result)
    assert v["front"] == ["dare_ties", "hydraopt-task-r8+int4", "int4"]
    assert v["hydraopt_on_front"] == ["hydraopt-task-r8+int4"]
    assert v["smallest_at_target"]["name"] == "int4" and v["smallest_at_target_ci"]["name"] == "int4"
    assert v["dominates_hydraopt"]["hydraopt-task-r8"]["by"] == "int4"  # fewer bytes, better by its interval
    assert "hydraopt-task-r8+int4" not in v["dominates_hydraopt"]
    assert v["compose"]["hydraopt-task-r8+int4"]["bytes_ratio"] == pytest.approx(0.25)
    budgets = {b["budget"]: b for b in report.budget_table(result)}
    assert budgets[0.5]["best"]["name"] == "int4" and budgets[0.5]["hydraopt"]["name"].startswith("hydraopt-task")
    assert budgets[0.5]["comparison"]["verdict"] == "better"
    assert budgets[0.025]["best"]["name"] == "dare_ties" and budgets[0.025]["hydraopt"] is None
    text = " ".join(report.finding_lines(result))
    assert "`int4`" in text and "HydraOpt on the Pareto front:** `hydraopt-task-r8+int4`" in text


def test_the_figure_draws_every_family_with_intervals():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = _synthetic([("individual", "individual", {}, 1.0, 1.0), ("int4", "quantize", {}, 0.25, 1.0),
                         ("jd-diag-c64", "jd", {}, 0.2, 0.8)])
    fig, ax = plt.subplots()
    report.frontier_axes(ax, result)
    labels = ax.get_legend_handles_labels()[1]
    assert {"quantization", "Compress then Serve", "Pareto front"} <= set(labels) and ax.get_xscale() == "log"
    plt.close(fig)
