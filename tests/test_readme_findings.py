"""The README's findings and figure are generated from the committed adapters and results, not typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydralib.suite import findings as fd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_findings():
    return fd.findings("default")


def test_readme_block_is_what_the_committed_data_give(default_findings):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert fd.current_block(text) == fd.readme_block(default_findings)
    figure = ROOT / fd.figure_path(default_findings)
    assert figure.is_file() and figure.stat().st_size > 10_000


def test_findings_are_in_range_and_consistent(default_findings):
    f = default_findings
    assert f["n"] == 40 and 0 <= f["base_em"] < f["own_em"] <= 1
    for cell in f["asymmetry"].values():
        if cell is not None:
            assert -0.05 <= cell["a"] <= 1 and -0.05 <= cell["b"] <= 1
            assert cell["winner"] == fd._winner(cell["a"], cell["b"])
    if f["frontier"] is None:
        rec = f["reconstruction"]
        # more heads can only lower the exact loss; every error is a fraction of the updates' energy
        assert 0 <= rec["task_a"] <= rec["one"] <= 1 and 0 <= rec["task_b"] <= 1


def test_sentences_follow_the_numbers():
    base = {"n": 40, "rank": 8, "model": "m", "own_em": 0.9, "base_em": 0.0, "frontier": None,
            "reconstruction": {"task_a": 0.4, "task_b": 0.6, "one": 0.9}}
    cell = lambda a, b: {"a": a, "b": b, "winner": fd._winner(a, b)}  # noqa: E731
    f = {**base, "asymmetry": {"same_seed": cell(0.6, 0.04), "different_seed": cell(0.01, 0.04),
                               "same_task": cell(0.04, 0.18)}}
    text = fd.asymmetry_sentence(f)
    assert "only when they share their initialisation" in text and "0.60 for A against 0.04 for B" in text
    assert "agrees more on B (0.18, against 0.04)" in text
    f["asymmetry"]["different_seed"] = cell(0.5, 0.04)
    assert "shared initialisation or not" in fd.asymmetry_sentence(f)
    f["asymmetry"] = {"same_seed": cell(0.1, 0.5), "different_seed": None, "same_task": None}
    assert "B factors of different tasks are more alike" in fd.asymmetry_sentence(f)
    assert "sharing A fits the updates better" in fd.merging_sentence(f)
    f["reconstruction"] = {"task_a": 0.6, "task_b": 0.4, "one": 0.9}
    assert "sharing B fits the updates better" in fd.merging_sentence(f)
    assert fd.figure_path(f) == fd.FIGURES["asymmetry"]


def test_types_sentence_follows_the_numbers_and_the_side_verdict():
    point = lambda rel, lo, hi, b: {"relative": rel, "lo": lo, "hi": hi, "relative_bytes": b}  # noqa: E731
    f = {"types": {"dora": {"hydra": point(0.97, 0.95, 0.99, 0.45), "int4": point(1.0, 0.99, 1.01, 0.26),
                            "side": {"verdict": "better"}},
                   "adalora": {"hydra": point(0.9, 0.88, 0.92, 0.5), "int4": point(0.99, 0.98, 1.0, 0.25),
                               "side": {"verdict": "within noise"}}}}
    text = fd.types_sentence(f)
    assert "DoRA: a shared A' and one head per task keeps 0.970 [0.950, 0.990] at 45.0 % of its bytes" in text
    assert "int4 1.000 [0.990, 1.010] at 26.0 %, and sharing A beats sharing B" in text
    assert "AdaLoRA" in text and "neither side beats the other" in text
    assert fd.types_sentence({"types": None}) == "" and fd.types_sentence({}) == ""
    f["types"] = {"vera": {"hydra": point(0.5, 0.45, 0.55, 0.6), "int4": None, "side": {"verdict": "worse"}}, **f["types"]}
    text = fd.types_sentence(f)
    assert text.startswith("On VeRA, DoRA and AdaLoRA adapters of the recipe tasks, VeRA: a shared λ_d' and one head "
                           "per task keeps 0.500 [0.450, 0.550] at 60.0 % of its bytes, and sharing λ_b beats sharing "
                           "λ_d; DoRA")


def test_replace_block_replaces_only_the_block():
    block = f"{fd.START}\nnew\n{fd.END}"
    text = f"intro\n\n{fd.START}\nold text\n{fd.END}\n\nrest\n"
    assert fd.replace_block(text, block) == f"intro\n\n{block}\n\nrest\n"
    assert fd.replace_block("intro\n", block) == f"intro\n\n{block}\n"
    assert fd.current_block("no block") is None


def test_finding_items_link_chapters_whose_titles_are_the_books():
    for stem, title in fd.CHAPTERS.items():
        first = next(line for line in (ROOT / "book" / f"{stem}.md").read_text(encoding="utf-8").splitlines()
                     if line.startswith("# "))
        assert first == f"# {title}"
    f = {"n": 40, "rank": 8, "model": "m", "own_em": 0.9, "base_em": 0.0, "frontier": None,
         "reconstruction": {"task_a": 0.4, "task_b": 0.6, "one": 0.9},
         "asymmetry": {"same_seed": None, "different_seed": None, "same_task": None},
         "advice": "Train with `lorafa`."}
    items = fd.finding_items(f)
    assert [c for _, c in items] == ["similarity", "frontier", "sharing_a"] and len(items) <= fd.MAX_ITEMS
    md = fd.findings_markdown(f)
    assert md.splitlines()[-1] == "- Train with `lorafa`. ([When does sharing A work?](sharing_a.md))"
    assert "](book/frontier.md)" in fd.readme_block(f)


def test_front_page_glues_the_same_findings():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert "## What the book found" in intro and "findings_markdown(" in intro
    assert intro.index("## What the book found") < intro.index("## What the book does")
