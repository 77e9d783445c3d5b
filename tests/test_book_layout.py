"""The book's sources as a reader will meet them: short visible code cells, and no pointer to a missing document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from book_cells import MAX_VISIBLE, counts, parse

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_visible_code_cells_are_short_unless_they_teach(chapter):
    cells, _ = parse(chapter.read_text(encoding="utf-8"))
    long = [(c.start, len(c.code)) for c in cells if c.visible and "sketch" not in c.tags and len(c.code) > MAX_VISIBLE]
    assert not long, f"{chapter.name}: visible cells longer than {MAX_VISIBLE} lines at (line, length) {long}"


def test_the_parser_sees_tags_and_folds():
    text = "---\nkernelspec: {}\n---\n# T\n\nprose\n\n```{code-cell} ipython3\n:tags: [hide-input]\na = 1\n```\n\n" \
           "```{code-cell} ipython3\n---\ntags: [sketch]\n---\nb = 2\n\nc = 3\n```\n"
    cells, prose = parse(text)
    assert [c.tags for c in cells] == [("hide-input",), ("sketch",)] and prose == ["# T", "prose"]
    assert counts(text) == {"visible_code": 2, "folded_code": 1, "prose": 2, "longest_visible": 0}


def test_no_reference_to_a_design_document_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}:{i}" for base in ("book", "hydralib") for p in (ROOT / base).rglob("*")
            if p.suffix in (".md", ".py") for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"DESIGN", line)]
    assert not hits, hits
