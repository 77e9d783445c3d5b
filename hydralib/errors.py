"""Errors raised by hydralib for bad input.

Every message names the file (and the module, where one is involved) and the
problem in one line, so that the command line can print it without a traceback.
"""

from __future__ import annotations


class HydraError(Exception):
    """Base class for every error hydralib raises on bad input."""


class AdapterError(HydraError, ValueError):
    """An adapter directory or file cannot be used (missing, corrupt, unsupported, inconsistent)."""


class OutputExistsError(HydraError, FileExistsError):
    """An output path exists already and ``overwrite`` was not given."""
