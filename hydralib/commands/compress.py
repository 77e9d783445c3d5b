"""`hydralib compress`: keep N adapters in fewer bytes without merging them (truncate, quantize, ComPEFT, JD).

Each method has its own knobs; a missing required knob, or a knob the method does
not take, is a usage error (exit code 2), like a bad ``--codec`` string:

* ``truncate``: ``--rank R`` (required), ``--codec`` (default ``fp16``);
* ``quantize``: ``--codec`` (default ``int4``);
* ``compeft``: ``--density D`` (default 0.1);
* ``jd``: ``--c C`` (required), ``--diagonal``, ``--codec`` of U and V (default ``fp16``).

``--out`` receives one ``compressed.safetensors`` (read back by
:func:`hydralib.compress.load_compressed`); ``--export-peft DIR`` also writes the
decoded adapters, one stock PEFT LoRA directory per task (``DIR/<task>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HydraError
from .common import EXIT_OK, add_lazy_arguments, load_for_command

METHODS = ("truncate", "quantize", "compeft", "jd")

# method -> (required knobs, knobs it takes); a knob is the dest of its flag
KNOBS = {
    "truncate": ({"rank"}, {"rank", "codec"}),
    "quantize": (set(), {"codec"}),
    "compeft": (set(), {"density"}),
    "jd": ({"c"}, {"c", "diagonal", "codec"}),
}
DEFAULTS = {"truncate": {"codec": "fp16"}, "quantize": {"codec": "int4"}, "compeft": {"density": 0.1},
            "jd": {"codec": "fp16", "diagonal": False}}
FLAGS = {"rank": "--rank R", "codec": "--codec CODEC", "density": "--density D", "c": "--c C",
         "diagonal": "--diagonal"}


def codec_arg(value: str) -> str:
    """``--codec``: a codec string of :func:`hydralib.compress.parse_codec` (argparse ``type``: bad ones are usage
    errors)."""
    from ..compress import parse_codec

    try:
        parse_codec(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def positive_int(value: str) -> int:
    """An integer >= 1 (argparse ``type``)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be at least 1")
    return n


def density_arg(value: str) -> float:
    """A fraction in (0, 1] (argparse ``type``)."""
    try:
        d = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < d <= 1:
        raise argparse.ArgumentTypeError(f"{value!r}: the density must be in (0, 1]")
    return d


def usage_error(args, message: str):
    """Exit with argparse's usage and ``message`` (exit code 2) from a command's ``run``."""
    parser = getattr(args, "_parser", None)
    if parser is None:  # run() called without the parser (not through hydralib.cli): same exit code
        raise SystemExit(2)
    parser.error(message)


def check_task_dirs(out_dir: str | Path, tasks, overwrite: bool) -> dict[str, Path]:
    """``{task: out_dir/task}``, every one checked (a directory name, writable) before anything is written."""
    from ..atomic import check_writable

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HydraError(f"{out_dir}: exists and is not a directory (--export-peft needs a directory)")
    targets = {}
    for task in tasks:
        if not task or "/" in task or "\\" in task or task in (".", ".."):
            raise HydraError(f"{out_dir}: task name {task!r} cannot be a directory name")
        targets[task] = check_writable(out_dir / task, overwrite)
    return targets


def export_tasks(cset, targets: dict[str, Path], overwrite: bool) -> None:
    """Write the decoded adapters of ``cset`` (``cset.to_adapter_set()``) as stock PEFT LoRA directories
    ``targets`` (``{task: out_dir/task}`` from :func:`check_task_dirs`), all appearing in ``out_dir`` at once."""
    from ..atomic import atomic_entries

    if not targets:
        return
    (out_dir,) = {Path(target).parent for target in targets.values()}
    decoded = cset.to_adapter_set()
    with atomic_entries(out_dir, [Path(t).name for t in targets.values()], overwrite=overwrite) as tmp:
        for task, target in targets.items():
            decoded.save_peft(task, tmp / Path(target).name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", help="PEFT LoRA adapter directories or glob patterns")
    add_lazy_arguments(p)
    p.add_argument("--method", required=True, choices=METHODS,
                   help="truncate (SVD to --rank), quantize (--codec), compeft (signs at --density) or jd "
                        "(Compress then Serve: a shared basis of size --c)")
    p.add_argument("--rank", type=positive_int, default=None, help="truncate: rank of every adapter (required)")
    p.add_argument("--codec", type=codec_arg, default=None,
                   help="truncate, jd (U and V): fp16 (default) or an integer codec; quantize: the codec "
                        "(default int4). Integer codecs: int8, int4, int3, int2, with :g<G> for one scale per "
                        "group of G numbers (int4:g64)")
    p.add_argument("--density", type=density_arg, default=None, help="compeft: fraction of entries kept (default 0.1)")
    p.add_argument("--c", type=positive_int, default=None, help="jd: size of the shared basis per module (required)")
    p.add_argument("--diagonal", action="store_true", default=None, help="jd: a diagonal Sigma per task")
    p.add_argument("--out", required=True, help="directory of the compressed file (compressed.safetensors)")
    p.add_argument("--export-peft", default=None,
                   help="also write the decoded adapters here, one PEFT LoRA directory per task")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(_parser=p)


def knobs_of(args) -> dict:
    """The knobs of ``args.method`` (defaults filled in); usage error for a missing or foreign knob."""
    required, allowed = KNOBS[args.method]
    given = {k for k in FLAGS if getattr(args, k) is not None}
    for knob in sorted(required - given):
        usage_error(args, f"--method {args.method} needs {FLAGS[knob]}")
    foreign = sorted(given - allowed)
    if foreign:
        takes = ", ".join(FLAGS[k].split()[0] for k in sorted(allowed)) or "no knobs"
        usage_error(args, f"--method {args.method} does not take {', '.join(FLAGS[k].split()[0] for k in foreign)} "
                          f"(it takes {takes})")
    return {**DEFAULTS[args.method], **{k: getattr(args, k) for k in given}}


def run(args) -> int:
    from ..atomic import check_writable
    from ..compress import compress_adapters, adapter_file_bytes, relative_loss, update_energy

    knobs = knobs_of(args)
    check_writable(args.out, args.overwrite)
    if args.export_peft:
        check_writable(args.export_peft, args.overwrite)
    aset = load_for_command(args)
    targets = check_task_dirs(args.export_peft, aset.tasks, args.overwrite) if args.export_peft else {}
    sources = [aset.sources[t] for t in aset.tasks]
    if update_energy(aset) == 0:
        n = len(aset.tasks)
        raise HydraError(f"{sources[0]}: the update{'s' * (n > 1)} of {'all ' * (n > 1)}{n} adapter{'s' * (n > 1)} "
                         f"{'are' if n > 1 else 'is'} zero (B = 0: untrained?); there is nothing to compress")
    try:
        cset = compress_adapters(aset, args.method, **knobs)
    except (KeyError, ValueError) as exc:
        raise HydraError(f"{args.method}: {exc}") from None
    if cset.base_model is None:
        cset.base_model = aset.base_model
    file = cset.save(args.out, overwrite=args.overwrite)
    written = f"wrote {file}"
    if targets:
        export_tasks(cset, targets, args.overwrite)
        written += f" and {len(targets)} PEFT director{'ies' if len(targets) != 1 else 'y'} under {args.export_peft}"
    size, reference = file.stat().st_size, adapter_file_bytes(sources)
    n = len(aset.tasks)
    print(f"{args.method} ({cset.method}): {n} task{'s' * (n != 1)}, {size:,} bytes = {size / reference:.3f} of "
          f"the adapters' {reference:,} bytes, relative loss {relative_loss(cset, aset):.4g}"
          f"{' of the DoRA direction updates (magnitudes kept in fp16)' if cset.is_dora else ''}; {written}")
    return EXIT_OK
