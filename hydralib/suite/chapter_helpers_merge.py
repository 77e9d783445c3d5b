"""Small table helpers for the book's merging chapters (baselines, HydraOpt, frontier, VeRA, performance).

A report table of the library often has more columns than a page is wide. The chapters show its key columns in
one table and the remaining ones in a second, keyed by the same first column, with :func:`split_columns`.

Example
-------
>>> rows, header = [["TA", "dW", 0.5, 0.9]], ["method", "space", "storage", "relative"]
>>> select_columns(rows, header, ["method", "relative"])
([['TA', 0.9]], ['method', 'relative'])
>>> (main, main_header), (rest, rest_header) = split_columns(rows, header, ["method", "storage", "relative"])
>>> rest_header, rest
(['method', 'space'], [['TA', 'dW']])
"""

from __future__ import annotations

from typing import Sequence


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
