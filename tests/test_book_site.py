"""The real book builds, and the rendered site is complete: pages, figures, glued numbers, no tracebacks.

The book is built once per test session by the ``site`` fixture (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for entry in toc.get("chapters", []) + [c for p in toc.get("parts", []) for c in p.get("chapters", [])]:
        files.append(entry["file"])
    return files


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def test_every_chapter_page_exists_without_errors(site):
    assert (site / "index.html").is_file()
    for name in _toc_files():
        page = site / f"{name}.html"
        assert page.is_file(), page
        soup = _soup(page)
        assert "Traceback (most recent call last)" not in soup.get_text()
        assert not soup.select("div.output.error, div.output.traceback, .cell_output .stderr")


def test_figures_resolve(site):
    images = 0
    for name in _toc_files():
        page = site / f"{name}.html"
        for img in _soup(page).find_all("img"):
            src = img["src"]
            if src.startswith(("http:", "https:", "data:")):
                continue
            assert (page.parent / src).resolve().is_file(), (page, src)
            images += 1
    assert images >= 1


def test_glued_numbers_are_rendered(site):
    from hydralib.presets import get_preset

    text = " ".join(_soup(site / "book" / "adapter_sets.html").get_text().split())
    n = len(get_preset("tiny").tasks)
    assert f"holds {n} adapters" in text
    assert f"One merged adapter costs {1 / n:.2f} of keeping them all" in text
