"""The book build is strict: a chapter with a failing cell makes the build fail.

The test builds a one-page book with the project's own ``_config.yml``, once
with a failing cell (the build must fail and say why) and once with the cell
fixed (the build must succeed, so the failure above is the cell's doing).
"""

from __future__ import annotations

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


def _build(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    book = tmp_path / "book"
    shutil.rmtree(book, ignore_errors=True)
    book.mkdir()
    shutil.copy(ROOT / "_config.yml", book / "_config.yml")
    (book / "_mathjax").mkdir()  # the static path the project's config names
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    (book / "chapter.md").write_text(PAGE.format(code=code))
    exe = Path(sys.executable).with_name("jupyter-book")
    return subprocess.run([str(exe), "build", str(book), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_failing_cell_fails_the_build(tmp_path):
    broken = _build(tmp_path, 'raise RuntimeError("this chapter is broken")')
    assert broken.returncode != 0
    assert "this chapter is broken" in broken.stdout + broken.stderr
    fixed = _build(tmp_path, 'print("fine")')
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr[-2000:]
    assert (tmp_path / "book" / "_build" / "html" / "chapter.html").is_file()
