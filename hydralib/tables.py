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


def select_columns(rows: Sequence[Sequence], header: Sequence[str], columns: Sequence[str]
                   ) -> tuple[list[list], list[str]]:
    """The named ``columns`` of a ``(rows, header)`` table, in the order given; ``(rows, header)``.

    Raises ``KeyError`` for a name that is not in ``header``, so that a renamed column fails loudly rather than
    disappearing from the page."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise KeyError(f"no column(s) {missing} in {list(header)}")
    index = [list(header).index(c) for c in columns]
    return [[row[i] for i in index] for row in rows], list(columns)


def split_columns(rows: Sequence[Sequence], header: Sequence[str], main: Sequence[str], key: str | None = None
                  ) -> tuple[tuple[list[list], list[str]], tuple[list[list], list[str]]]:
    """Split a wide table in two: ``main`` columns, and ``key`` (default: the first column) followed by every
    column not in ``main``, in the table's order. Returns ``((main_rows, main_header), (rest_rows, rest_header))``;
    no column is lost."""
    key = header[0] if key is None else key
    rest = [key] + [c for c in header if c not in main and c != key]
    return select_columns(rows, header, main), select_columns(rows, header, rest)
