"""`hydralib merge`: HydraOpt bundles (with per-task PEFT export) and dW-space baselines."""

from __future__ import annotations

import argparse
import re

from ..errors import HydraError
from .common import EXIT_OK, add_lazy_arguments, load_for_command, described, read_metadata


def heads_arg(value: str) -> str | int:
    """``--heads``: ``task``, a metadata key or an integer K >= 1 (argparse ``type``; bad values are usage errors)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty value; use 'task', a metadata key (application, language) "
                                         "or an integer K >= 1")
    if re.fullmatch(r"\s*[+-]?\d+\s*", value):
        k = int(value)
        if k < 1:
            raise argparse.ArgumentTypeError(f"{value!r}: the number of heads must be at least 1")
        return k
    return value


def device_arg(value: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (argparse ``type``; other values are usage errors)."""
    import torch

    try:
        device = torch.device(value.strip())
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{value!r}: use cpu, cuda or cuda:N")
    return str(device)


def resolve_device(choice: str | None):
    """The ``torch.device`` to merge on: ``choice`` (``--device``), else :func:`hydralib.presets.get_device`
    (``$HYDRALIB_DEVICE``, else CUDA when available, else CPU); a CUDA device must exist here."""
    import torch

    from ..presets import get_device

    try:
        device = get_device(choice)
    except (RuntimeError, ValueError):
        raise HydraError(f"device {choice!r} (from $HYDRALIB_DEVICE): use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HydraError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HydraError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise HydraError(f"device {str(device)!r} (from $HYDRALIB_DEVICE): use cpu, cuda or cuda:N")
    return device


def check_grouping_key(path: str, metadata: dict, tasks: list[str], key: str) -> None:
    """Every task has a string (or integer) ``metadata[task][key]`` to name its head; errors name ``path``."""
    missing = [t for t in tasks if t not in metadata]
    if missing:
        raise HydraError(f"{path}: no entry for tasks {missing[:5]}; --heads {key} needs the {key!r} of every adapter")
    lacking = [t for t in tasks if key not in metadata[t]]
    if lacking:
        raise HydraError(f"{path}: tasks {lacking[:5]} have no {key!r} (needed by --heads {key})")
    for task in tasks:
        value = metadata[task][key]
        if not ((isinstance(value, str) and value.strip()) or (isinstance(value, int) and not isinstance(value, bool))):
            raise HydraError(f"{path}: task {task!r}: {key!r} must be a non-empty string (it names the head), "
                             f"got {described(value)}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..merge import MERGE_METHODS, SOLVERS, WEIGHTINGS

    p.add_argument("adapters", nargs="+", help="PEFT LoRA adapter directories or glob patterns")
    p.add_argument("--method", default="hydraopt", choices=["hydraopt", *MERGE_METHODS],
                   help="hydraopt (shared factor + heads) or a dW-space baseline (default hydraopt)")
    p.add_argument("--out", required=True,
                   help="hydraopt: bundle directory; baselines: a PEFT LoRA directory of the merged adapter")
    p.add_argument("--heads", default="task", type=heads_arg,
                   help="hydraopt: 'task' (one per task), a metadata key (application, language; needs --metadata) "
                        "or an integer K from 1 to the number of adapters")
    p.add_argument("--rank", type=int, default=None, help="rank of the result (default: the adapters' rank)")
    p.add_argument("--side", default="A", choices=["A", "B"], help="hydraopt: which factor is shared")
    p.add_argument("--solver", default="exact", choices=list(SOLVERS), help="hydraopt solver")
    p.add_argument("--weighting", default="uniform", choices=list(WEIGHTINGS), help="hydraopt task weighting")
    p.add_argument("--lam", type=float, default=1.0, help="baselines: global scaling of the merged dW")
    p.add_argument("--density", type=float, default=None, help="baselines: TIES/DARE density")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step")
    p.add_argument("--device", default=None, type=device_arg,
                   help="where to compute: cpu, cuda or cuda:N (default: CUDA when available, else CPU; "
                        "$HYDRALIB_DEVICE sets the default); results are written from the CPU either way")
    p.add_argument("--metadata", default=None,
                   help="JSON file {task: {application, language}} for --heads <key> (every adapter needs an entry "
                        "with that key; other tasks may be listed); recorded in the bundle")
    p.add_argument("--export-peft", default=None, help="hydraopt: also write one PEFT LoRA directory per task here")
    p.add_argument("--quantize", default=None, choices=["int8", "int4"],
                   help="hydraopt: store the shared factor and heads as integer codes: --out receives one "
                        "compressed.safetensors (read by hydralib.compress.load_compressed) instead of the bundle, "
                        "and --export-peft the dequantized adapters")
    p.add_argument("--base-model", default=None, metavar="DIR",
                   help="DoRA adapters only (required for them): the base model's save_pretrained directory, for "
                        "the row norms of W0 + s B A; --out then receives DoRA PEFT directories")
    p.add_argument("--magnitude", default="lstsq", choices=["lstsq", "kept", "refit"],
                   help="hydraopt on DoRA adapters: each task's magnitude after the fit (default lstsq, the lowest loss)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_lazy_arguments(p)
    p.set_defaults(_parser=p)


def _save_quantized(args, aset, result, codec: str, total: int, targets: dict) -> int:
    """``--quantize``: ``--out`` gets the compressed file of ``result`` under ``codec``; ``targets`` (``{task:
    directory}``, checked) the dequantized per-task adapters."""
    from ..compress import adapter_file_bytes, from_hydraopt, relative_loss
    from .compress import export_tasks

    cset = from_hydraopt(result, codec)
    file = cset.save(args.out, overwrite=args.overwrite)
    size, reference = file.stat().st_size, adapter_file_bytes([aset.sources[t] for t in aset.tasks])
    print(f"hydraopt: {result.n_heads} heads, side {args.side}, loss {result.total_loss:.4g} "
          f"(floor {result.total_floor:.4g}, energy {result.total_energy:.4g}); storage {result.storage:,} "
          f"numbers = {result.storage / total:.3f} of keeping all {len(aset.tasks)} adapters; stored {codec}: "
          f"{size:,} bytes = {size / reference:.3f} of the adapters' {reference:,} bytes, relative loss "
          f"{relative_loss(cset, aset):.4g}")
    if targets:
        export_tasks(cset, targets, args.overwrite)
        print(f"wrote {file} ({codec}) and {len(targets)} PEFT director{'ies' if len(targets) != 1 else 'y'} under "
              f"{args.export_peft}")
    else:
        print(f"wrote {file} ({codec})")
    return EXIT_OK


def run(args) -> int:
    from .. import storage
    from ..adapters import AdapterSet
    from ..atomic import check_writable
    from .compress import check_task_dirs, usage_error

    quantize = getattr(args, "quantize", None)
    if quantize and args.method != "hydraopt":
        usage_error(args, f"--quantize stores a HydraOpt result; it does not apply to --method {args.method}")
    check_writable(args.out, args.overwrite)
    if args.export_peft:
        check_writable(args.export_peft, args.overwrite)
    metadata = read_metadata(args.metadata)
    heads = args.heads
    by_key = args.method == "hydraopt" and isinstance(heads, str) and heads != "task"
    if by_key and metadata is None:
        raise HydraError(f"hydraopt: --heads {heads} is a metadata key, but no --metadata file was given "
                         f"(pass --metadata FILE, or use --heads task or an integer K)")
    device = resolve_device(getattr(args, "device", None))
    aset = load_for_command(args, metadata)
    if aset.magnitudes:  # DoRA: hydralib.commands.merge_dora
        from .merge_dora import run_dora

        return run_dora(args, aset, heads, device)
    if getattr(args, "base_model", None) is not None:
        usage_error(args, "--base-model is only used for DoRA adapters")
    total = storage.set_params(aset)
    if args.method == "hydraopt":
        from ..merge import export_peft, hydraopt

        n = len(aset.tasks)
        if isinstance(heads, int) and heads > n:
            raise HydraError(f"hydraopt: --heads {heads}: more heads than the {n} adapter{'s' * (n != 1)} given "
                             f"(K must be 1 to {n})")
        if by_key:
            check_grouping_key(args.metadata, metadata, aset.tasks, heads)
        # --quantize exports from the compressed set: every target is checked before computing
        targets = check_task_dirs(args.export_peft, aset.tasks, args.overwrite) if quantize and args.export_peft else {}
        options = dict(heads=heads, rank=args.rank, side=args.side, solver=args.solver, weighting=args.weighting,
                       seed=args.seed, device=device)
        streamed = getattr(aset, "lazy", False) and not quantize  # out of core: the bundle is written module by module
        try:
            if streamed:
                from ..merge.hydraopt.stream import hydraopt_to_bundle

                result = hydraopt_to_bundle(aset, args.out, overwrite=args.overwrite, **options)
            else:
                result = hydraopt(aset, **options)
        except (KeyError, ValueError) as exc:
            raise HydraError(f"hydraopt: {exc}") from None
        if quantize:
            return _save_quantized(args, aset, result, quantize, total, targets)
        if not streamed:
            result.save(args.out, overwrite=args.overwrite)
        print(f"hydraopt: {result.n_heads} heads, side {args.side}, loss {result.total_loss:.4g} "
              f"(floor {result.total_floor:.4g}, energy {result.total_energy:.4g}); storage {result.storage:,} "
              f"numbers = {result.storage / total:.3f} of keeping all {len(aset.tasks)} adapters")
        if args.export_peft:
            if streamed:
                from ..merge.hydraopt.stream import export_peft_streamed

                export_peft_streamed(args.out, args.export_peft, overwrite=args.overwrite)
            else:
                export_peft(result, args.export_peft, overwrite=args.overwrite)
            print(f"wrote {args.out} (bundle) and {len(aset.tasks)} PEFT directories under {args.export_peft}")
        else:
            print(f"wrote {args.out} (bundle)")
        return EXIT_OK
    from ..merge import merge_adapters

    try:
        merged = merge_adapters(aset, args.method, lam=args.lam, density=args.density, rank=args.rank, seed=args.seed,
                                device=device)
    except (KeyError, ValueError) as exc:
        raise HydraError(f"{args.method}: {exc}") from None
    out = AdapterSet.from_factors({"merged": {m: merged.factors(m) for m in aset.modules}}, base_model=aset.base_model)
    out.save_peft("merged", args.out, overwrite=args.overwrite)
    print(f"{args.method}: rank {merged.rank}, storage {merged.storage:,} numbers = {merged.storage / total:.3f} of "
          f"keeping all {len(aset.tasks)} adapters; wrote PEFT directory {args.out}")
    return EXIT_OK
