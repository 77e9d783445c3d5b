"""Chapters that wait for the default zoo's results still execute, alone, on the tiny preset.

A chapter whose default-preset inputs are not committed yet (for example
"VeRA", which needs the zoo's VeRA adapters and ``results/vera-frontier.json``)
is left out of the published table of contents (``_toc.yml``; the book builds
only files in it). Every ``book/*.md`` that is not in the toc is built here
alone, with the project's strict settings, so it cannot rot meanwhile.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pending_chapters() -> list[str]:
    """``book/*.md`` files that ``_toc.yml`` does not list."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    entries += [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    listed = {str(Path(e).with_suffix("")) for e in entries}
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "book").glob("*.md")
                  if str(p.relative_to(ROOT).with_suffix("")) not in listed)


def test_vera_is_in_the_toc_exactly_when_its_default_inputs_are_committed():
    """The VeRA chapter is published when, and only when, the default zoo has its VeRA adapters and the VeRA
    frontier computed on them is committed (otherwise the book command would retrain or recompute for an hour)."""
    from hydralib.suite.artifacts import zoo_groups
    from hydralib.suite.vera_frontier import vera_frontier_results

    ready = "vera" in zoo_groups("default") and vera_frontier_results("default", stored_only=True) is not None
    assert ("book/vera.md" not in pending_chapters()) == ready


def test_other_types_is_in_the_toc_exactly_when_its_default_inputs_are_committed():
    """"Other adapter types" is published when, and only when, the default zoo's DoRA and AdaLoRA groups and the
    results measured on them and on the zoo's VeRA adapters are committed (otherwise the book command would train
    for hours)."""
    from hydralib.suite.adapter_types_measure import type_results

    ready = type_results("default", stored_only=True) is not None
    assert ("book/other_types.md" not in pending_chapters()) == ready


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("chapter", pending_chapters())
def test_pending_chapter_builds_alone_on_tiny(chapter, tmp_path):
    env = dict(os.environ, BUILD_CHAPTER_DIR=str(tmp_path), HYDRALIB_CACHE=str(tmp_path / "cache"),
               PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", str(ROOT / "tools" / "build_chapter.sh"), chapter, "tiny"],
                            capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = Path(result.stdout.strip().splitlines()[-1])
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    assert "Traceback (most recent call last)" not in soup.get_text()
    assert not soup.select("div.output.error, div.output.traceback, .cell_output .stderr")
    assert len(soup.find_all("img")) >= 2
