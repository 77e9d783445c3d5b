"""Shared pieces of the command-line subcommands: exit codes, JSON inputs, tables."""

from __future__ import annotations

import json

from ..errors import HydraError
from ..tables import text_table

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2

__all__ = ["EXIT_OK", "EXIT_BAD_INPUT", "EXIT_USAGE", "described", "json_type", "read_json_object", "read_metadata",
           "shown", "text_table"]


def json_type(value) -> str:
    """The JSON name of a decoded value's type (``object``, ``array``, ``string``, ``number``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    for types, name in ((dict, "object"), (list, "array"), (str, "string"), ((int, float), "number")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def shown(value, limit: int = 40) -> str:
    """``value`` as short JSON text, for messages."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def described(value) -> str:
    """``value``'s JSON type and short text, for messages: ``array ["a"]``, ``number 3``, ``null``."""
    if value is None or isinstance(value, bool):
        return shown(value)
    return f"{json_type(value)} {shown(value)}"


def read_json_object(path: str | None, what: str = "metadata") -> dict | None:
    """A JSON object ``{key: value}`` from ``path`` (``None`` -> ``None``); errors name the file in one line.

    The file must be UTF-8 text (a byte order mark is allowed) holding one JSON object.
    """
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise HydraError(f"{path}: cannot read {what} JSON (no such file)") from None
    except IsADirectoryError:
        raise HydraError(f"{path}: cannot read {what} JSON (it is a directory, not a file)") from None
    except OSError as exc:
        raise HydraError(f"{path}: cannot read {what} JSON ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte order mark is allowed
    except UnicodeDecodeError as exc:
        raise HydraError(f"{path}: cannot read {what} JSON (not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                         f"offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HydraError(f"{path}: cannot read {what} JSON (not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except RecursionError:
        raise HydraError(f"{path}: cannot read {what} JSON (not valid JSON: nested too deeply)") from None
    if not isinstance(data, dict):
        raise HydraError(f"{path}: {what} must be a JSON object {{...}}, got {described(data)}")
    return data


def read_metadata(path: str | None) -> dict[str, dict] | None:
    """Task metadata ``{task: {key: value}}`` from ``path`` (``None`` -> ``None``); each task's entry must be
    an object. Tasks that are not among the adapters are allowed (one file may describe a whole zoo)."""
    metadata = read_json_object(path, "metadata")
    if metadata is None:
        return None
    for task, entry in metadata.items():
        if not isinstance(entry, dict):
            raise HydraError(f"{path}: the entry of task {task!r} must be a JSON object like "
                             f'{{"application": ..., "language": ...}}, got {described(entry)}')
    return metadata


def add_lazy_arguments(p) -> None:
    """``--lazy`` / ``--no-lazy``: read the adapters out of core or into memory (default: by size on disk)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--lazy", dest="lazy", action="store_const", const=True, default=None,
                       help="read each module's tensors from disk only when used (default when the adapters' files "
                            "exceed 1 GiB, or $HYDRALIB_LAZY_THRESHOLD bytes)")
    group.add_argument("--no-lazy", dest="lazy", action="store_const", const=False,
                       help="read every adapter into memory first, whatever its size")


def load_for_command(args, metadata=None):
    """The adapter set of ``args.adapters``: lazy or eager as ``args.lazy`` says (``None``: by size on disk).

    A lazy choice is said on stderr in one line (sizes in bytes)."""
    import sys

    from ..lazy import LazyAdapterSet, adapters_bytes, lazy_threshold, open_adapters

    aset = open_adapters(args.adapters, metadata=metadata, lazy=getattr(args, "lazy", None))
    if isinstance(aset, LazyAdapterSet):
        why = "--lazy" if getattr(args, "lazy", None) else f"more than the threshold {lazy_threshold():,}"
        print(f"reading {len(aset.tasks)} adapters lazily, module by module ({adapters_bytes(args.adapters):,} bytes "
              f"on disk; {why})", file=sys.stderr)
    return aset
