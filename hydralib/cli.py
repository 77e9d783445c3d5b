"""The ``hydralib`` command line.

Subcommands are registered in :data:`COMMANDS` (name -> (help, module)); each
module of :mod:`hydralib.commands` (and :mod:`hydralib.bench.cli`) has
``add_arguments(parser)`` and ``run(args) -> exit code``. Exit codes scripts can
rely on: 0 success, 1 bad input (a one-line message on stderr that names the
file and the problem), 2 usage error (argparse). ``--debug`` shows the
traceback instead of the one-line message.

Example
-------
    hydralib info adapters/*            # tasks, modules, ranks, scalings, storage
    hydralib info adapters/* --json     # the same, machine-readable
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE
from .errors import HydraError

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_USAGE", "build_parser", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("print tasks, modules, ranks, scalings and the storage table of adapters", "hydralib.commands.info"),
    "analyze": ("measure the A/B asymmetry (spectra, cross-task similarity) and write figures + JSON",
                "hydralib.commands.analyze"),
    "merge": ("merge adapters: HydraOpt (bundle, optional per-task PEFT export) or a dW-space baseline",
              "hydralib.commands.merge"),
    "compress": ("keep adapters in fewer bytes without merging: rank truncation, integer codes, ComPEFT signs or "
                 "a shared basis (Compress then Serve); optional per-task PEFT export", "hydralib.commands.compress"),
    "evaluate": ("exact match of adapters (or the base model) on suite tasks, with an optional task -> adapter map",
                 "hydralib.commands.evaluate"),
    "train": ("train the adapter zoo of a preset (resumable: finished adapters are kept)", "hydralib.commands.train"),
    "bench": ("time and measure memory of merging: HydraOpt exact / Adam, dW baselines, peft's add_weighted_adapter",
              "hydralib.bench.cli"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydralib", description="Analyse and merge low-rank adapters.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module_name) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._run(args)
    except BrokenPipeError:  # e.g. `hydralib info ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (HydraError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"hydralib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
