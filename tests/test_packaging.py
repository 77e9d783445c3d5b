"""Setup files agree with each other, and the library's doctest examples run."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict[str, str]:
    return {m[1].lower(): m[2] for m in re.finditer(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", text, re.M)}


def test_environment_yml_matches_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text())
    conda = _pins((ROOT / "environment.yml").read_text())
    assert conda, "environment.yml pins nothing"
    mismatched = {k: (v, constraints.get(k)) for k, v in conda.items() if constraints.get(k) != v}
    assert not mismatched


def test_torch_is_pinned_everywhere():
    assert 'torch==2.13.0' in (ROOT / "pyproject.toml").read_text()
    assert _pins((ROOT / "constraints.txt").read_text())["torch"] == "2.13.0"
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


@pytest.mark.parametrize("name", ["adapters", "storage", "tables", "plotting", "presets", "notebook", "synthetic"])
def test_doctests(name):
    module = importlib.import_module(f"hydralib.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
