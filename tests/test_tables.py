"""The table helpers of the merging chapters (hydralib.tables)."""

from __future__ import annotations

import doctest

import pytest

from hydralib import tables as helpers

ROWS = [["TA", "dW", 1, 0.031, 0.91, "yes"], ["TIES", "dW", 1, 0.031, 0.88, ""]]
HEADER = ["method", "space", "heads K", "relative storage", "relative", "Pareto"]


def test_select_columns_keeps_the_order_asked_for():
    rows, header = helpers.select_columns(ROWS, HEADER, ["relative", "method"])
    assert header == ["relative", "method"]
    assert rows == [[0.91, "TA"], [0.88, "TIES"]]


def test_select_columns_fails_on_an_unknown_name():
    with pytest.raises(KeyError, match="exact match"):
        helpers.select_columns(ROWS, HEADER, ["method", "exact match"])


def test_split_columns_loses_no_column_and_repeats_the_key():
    (main, main_header), (rest, rest_header) = helpers.split_columns(
        ROWS, HEADER, ["method", "relative storage", "relative", "Pareto"])
    assert main_header == ["method", "relative storage", "relative", "Pareto"]
    assert rest_header == ["method", "space", "heads K"]
    assert main[0] == ["TA", 0.031, 0.91, "yes"] and rest[1] == ["TIES", "dW", 1]
    assert set(main_header) | set(rest_header) == set(HEADER)
    (_, _), (keyed, keyed_header) = helpers.split_columns(ROWS, HEADER, ["relative"], key="space")
    assert keyed_header == ["space", "method", "heads K", "relative storage", "Pareto"] and keyed[0][0] == "dW"


def test_docstring_examples():
    assert doctest.testmod(helpers).failed == 0
