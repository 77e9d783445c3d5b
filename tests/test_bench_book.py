"""The Performance appendix renders the committed results (glued, not retyped) and its live run."""

from __future__ import annotations

import pytest

from hydralib.bench.report import DATA_DIR, load_result


def test_committed_results_are_well_formed():
    paper = load_result(DATA_DIR / "llama-3.2-1b-cpu.json")
    assert paper["complete"] and paper["preset"]["name"] == "llama-3.2-1b"
    assert paper["preset"]["n_tasks"] == 40 and paper["preset"]["rank"] == 32
    assert paper["machine"]["threads"] == 1 and paper["machine"]["load_before"] is not None
    for name in ("hydraopt-exact", "hydraopt-adam", "peft-svd", "ta-dense"):
        assert paper["methods"][name]["status"] == "ok", name
    exact, adam = (paper["methods"][m]["quality"] for m in ("hydraopt-exact", "hydraopt-adam"))
    assert exact["loss"] <= adam["loss"]
    scaling = load_result(DATA_DIR / "scaling-cpu.json")
    assert scaling["complete"] and scaling["kind"] == "scaling"
    assert all(p["status"] == "ok" for p in scaling["points"])
    assert min(scaling["grid"]["n_tasks"]) == 5 and min(scaling["grid"]["d_model"]) == 576


@pytest.mark.slow
def test_performance_page_renders_glued_numbers(site):
    from bs4 import BeautifulSoup

    page = site / "book" / "performance.html"
    text = " ".join(BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").get_text().split())
    paper = load_result(DATA_DIR / "llama-3.2-1b-cpu.json")
    exact = paper["methods"]["hydraopt-exact"]["median_s"]
    assert f"took {exact:.1f} s (median of" in text
    assert "Findings" in text and "A live run" in text
