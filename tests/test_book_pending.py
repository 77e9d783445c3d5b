"""Chapters that wait for the default zoo's results still execute, alone, on the tiny preset.

"Merging baselines" and "The efficiency-performance frontier" read
``results/frontier.json``; "VeRA" needs the zoo's VeRA adapters (not yet
trained for the default preset) and ``results/vera-frontier.json``. Until those
are committed for the default zoo these chapters are left out of the published
table of contents (``_toc.yml``; the book builds only files in it), and this
test builds each one alone with the project's strict settings.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("chapter", ["book/baselines.md", "book/frontier.md", "book/vera.md"])
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
