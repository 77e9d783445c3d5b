"""Plain tables for terminals and for the book (no pandas needed).

Example
-------
>>> print(text_table([["a", 1]], ["name", "n"]))
name  n
----  -
a     1
>>> print(markdown_table([["a", 1]], ["name", "n"]))
| name | n |
| --- | --- |
| a | 1 |
"""

from __future__ import annotations

from typing import Sequence


def text_table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(row) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    """A Markdown (GitHub / MyST) table; display it with ``IPython.display.Markdown``."""
    def cells(row) -> str:
        return "| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |"

    return "\n".join([cells(header), cells(["---"] * len(header))] + [cells(r) for r in rows])
