"""Shared pieces of the command-line subcommands: exit codes, JSON inputs, tables."""

from __future__ import annotations

import json

from ..errors import HydraError
from ..tables import text_table

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2

__all__ = ["EXIT_OK", "EXIT_BAD_INPUT", "EXIT_USAGE", "read_json_object", "text_table"]


def read_json_object(path: str | None, what: str = "metadata") -> dict | None:
    """A JSON object ``{key: value}`` from ``path`` (``None`` -> ``None``); errors name the file."""
    if not path:
        return None
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HydraError(f"{path}: cannot read {what} JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HydraError(f"{path}: {what} must be a JSON object")
    return data
