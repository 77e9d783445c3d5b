"""A tiny benchmark run: every method side by side, a well-formed JSON, invariants between the methods' outputs."""

from __future__ import annotations

import json

import pytest

from hydralib.bench import METHODS, bench_preset, load_result, run_benchmark, summarise
from hydralib.bench.report import table_rows, text_report
from hydralib.bench.scaling import AXES, grid_points, run_scaling, slope

TINY = dict(n_tasks=5, rank=2, d_model=64, d_kv=32, n_layers=1)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    result = run_benchmark(bench_preset("smollm2", **TINY), repeats=2, isolate=False, out=out, progress=False,
                           echo=lambda text: None)
    return result, out


def test_json_is_complete_and_has_every_method(tiny_result):
    result, out = tiny_result
    on_disk = load_result(out)
    assert on_disk == json.loads(json.dumps(result, default=str))
    assert result["complete"] is True and result["kind"] == "methods"
    assert list(result["methods"]) == list(METHODS)
    for name, rec in result["methods"].items():
        assert rec["status"] == "ok", (name, rec.get("error"), rec.get("traceback"))
        assert 1 <= rec["repeats_done"] <= 2 and len(rec["seconds"]) == rec["repeats_done"]
        assert rec["median_s"] > 0
        assert rec["memory"]["run_peak_mib"] >= rec["memory"]["setup_rss_mib"] > 0
        assert rec["quality"]["loss"] >= 0 and rec["quality"]["storage"] > 0
    machine = result["machine"]
    for key in ("cpu_count", "threads", "torch_threads", "load_before", "load_after", "device", "torch", "peft"):
        assert key in machine
    assert machine["threads"] == machine["torch_threads"] == 1
    assert result["preset"]["n_tasks"] == 5 and result["adapters"]["structure"]["basis"] == "random"


def test_exact_is_never_above_adam_and_adam_reached_its_target(tiny_result):
    result, _ = tiny_result
    exact, adam = (result["methods"][m]["quality"] for m in ("hydraopt-exact", "hydraopt-adam"))
    assert exact["loss"] <= adam["loss"]
    assert exact["loss"] == pytest.approx(exact["floor"], rel=1e-4, abs=1e-9)   # the exact solver sits on the floor
    assert adam["loss"] <= 1.01 * exact["floor"] * (1 + 1e-9)
    assert adam["reached_target"] and adam["steps_total"] >= 1
    assert adam["init_loss"] > 1.01 * exact["floor"]  # the structured adapters make Adam work for it
    targets = {t["target"]: t for t in result["targets"]}
    assert targets["exact loss <= Adam loss (every module, relative tolerance 1e-6)"]["met"]


def test_same_output_methods_agree(tiny_result):
    """K = 1 HydraOpt, our factored TA and peft's svd merge all give the best rank-r approximation of the mean dW."""
    result, _ = tiny_result
    q = {name: rec["quality"] for name, rec in result["methods"].items()}
    for name in ("ta-factored", "ta-dense", "peft-svd"):
        assert q[name]["loss"] == pytest.approx(q["hydraopt-exact-k1"]["loss"], rel=1e-4)
    assert q["ties-dense"]["loss"] == pytest.approx(q["peft-ties_svd"]["loss"], rel=1e-4)  # same merge_utils.ties
    assert q["peft-cat"]["loss"] <= q["peft-svd"]["loss"] * (1 + 1e-6)  # rank N r keeps the whole mean
    assert q["hydraopt-exact"]["loss"] <= q["hydraopt-exact-k1"]["loss"]


def test_ratios_come_from_the_same_run(tiny_result):
    result, _ = tiny_result
    again = summarise(result)
    assert again["comparisons"] == result["comparisons"]
    m = result["methods"]
    ratio = result["comparisons"]["peft-svd / hydraopt-exact"]["time_ratio"]
    assert ratio == pytest.approx(m["peft-svd"]["median_s"] / m["hydraopt-exact"]["median_s"])
    adam = result["comparisons"]["hydraopt-adam / hydraopt-exact"]["time_ratio"]
    assert adam == pytest.approx(m["hydraopt-adam"]["median_s"] / m["hydraopt-exact"]["median_s"])
    rows, header = table_rows(result)
    assert len(rows) == len(METHODS) and "median s" in header
    assert "peft-dare_ties_svd" in text_report(result)


def test_isolated_worker_process(tmp_path):
    result = run_benchmark(bench_preset("smollm2", **TINY), methods=["hydraopt-exact"], repeats=1, isolate=True,
                           progress=False, echo=lambda text: None, workdir=tmp_path)
    rec = result["methods"]["hydraopt-exact"]
    assert rec["status"] == "ok", rec.get("traceback")
    assert rec["memory"]["hwm_reset"] in (True, False) and rec["memory"]["run_peak_mib"] > 0


def test_scaling_grid_and_slopes():
    assert slope([1, 10, 100], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert slope([1], [1.0]) is None
    result = run_scaling("tiny", repeats=1, isolate=False, progress=False, echo=lambda text: None)
    points = grid_points({"n_tasks": [3, 6], "d_model": [64, 128], "rank": [2, 4]}, result["base"])
    assert len(result["points"]) == 2 * len(points)
    assert all(p["status"] == "ok" for p in result["points"])
    for method in ("hydraopt-exact", "ta-dense"):
        assert set(result["slopes"][method]) == set(AXES)
        assert result["slopes"][method]["d_model"]["time"] is not None


def test_set_threads_also_fixes_numpy_blas_threads():
    import ctypes
    import os
    import re

    import torch

    from hydralib.bench.machine import set_numpy_blas_threads, set_threads

    with open("/proc/self/maps") as fh:
        paths = sorted(set(re.findall(r"(\S*openblas\S*\.so\S*)", fh.read())))
    getters = [getattr(ctypes.CDLL(p), name) for p in paths
               for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads") if hasattr(ctypes.CDLL(p), name)]
    if not getters:
        pytest.skip("no OpenBLAS with a known thread getter in this process")
    get = getters[0]
    before_numpy, before_torch = get(), torch.get_num_threads()
    try:
        assert set_numpy_blas_threads(2)
        if (os.cpu_count() or 1) >= 2:
            assert get() == 2
        assert set_threads(1) == 1 and get() == 1  # torch's threads and numpy's BLAS together
    finally:
        set_numpy_blas_threads(before_numpy)
        torch.set_num_threads(before_torch)
    assert get() == before_numpy
