"""`hydralib merge` on DoRA adapters: HydraOpt or a baseline on the direction updates, magnitudes per task
(HydraOpt) or averaged (baselines), judged on the adapted weights; needs ``--base-model DIR``.

``--out`` receives DoRA PEFT directories: one per task (``--out/<task>``) for HydraOpt, one for a baseline.
With ``--quantize`` (HydraOpt), ``--out`` receives one compressed file instead (shared factor and heads as
integer codes, each task's magnitude in fp16; ``hydralib.compress.load_compressed`` reads it) and
``--export-peft`` the dequantized DoRA directories.
"""

from __future__ import annotations

from ..errors import HydraError
from .common import EXIT_OK


def run_dora(args, aset, heads, device) -> int:
    """Merge the DoRA set ``aset`` as ``args`` asks; ``heads`` and ``device`` as resolved by ``merge.run``."""
    from .. import storage
    from ..merge import hydraopt_dora, merge_dora
    from .compress import check_task_dirs, usage_error

    if args.base_model is None:
        usage_error(args, "DoRA adapters: pass --base-model DIR (the base model's save_pretrained directory): the "
                          "DoRA weight divides by the row norms of W0 + s B A")
    quantize = getattr(args, "quantize", None)
    if args.export_peft and not quantize:
        usage_error(args, "DoRA adapters: --out already receives the PEFT directories; drop --export-peft "
                          "(it goes with --quantize)")
    total = storage.set_params(aset)
    note = "direction updates merged; relative reconstruction loss of the adapted weights W_i"
    if args.method == "hydraopt":
        if quantize:
            from ..atomic import check_writable

            check_writable(args.out, args.overwrite)
        targets = (check_task_dirs(args.export_peft, aset.tasks, args.overwrite) if args.export_peft else {}) \
            if quantize else check_task_dirs(args.out, aset.tasks, args.overwrite)
        try:
            result = hydraopt_dora(aset, base_model=args.base_model, magnitude=args.magnitude, heads=heads,
                                   rank=args.rank, side=args.side, solver=args.solver, weighting=args.weighting,
                                   seed=args.seed, device=device)
        except (KeyError, ValueError) as exc:
            raise HydraError(f"hydraopt: {exc}") from None
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        print(f"hydraopt (DoRA): {result.hydra.n_heads} heads, side {args.side}, magnitudes {result.magnitude}; "
              f"{note}: {losses}; storage {result.storage:,} numbers = {result.storage / total:.3f} of keeping all "
              f"{len(aset.tasks)} adapters")
        if quantize:
            from ..compress import adapter_file_bytes, from_hydraopt
            from .compress import export_tasks

            cset = from_hydraopt(result, quantize)
            file = cset.save(args.out, overwrite=args.overwrite)
            size, reference = file.stat().st_size, adapter_file_bytes([aset.sources[t] for t in aset.tasks])
            if targets:
                export_tasks(cset, targets, args.overwrite)
            print(f"wrote {file} ({quantize}; magnitudes fp16): {size:,} bytes = {size / reference:.3f} of the "
                  f"adapters' {reference:,} bytes" + (f"; {len(targets)} DoRA PEFT directories under "
                                                     f"{args.export_peft}" if targets else ""))
            return EXIT_OK
        result.export_peft(args.out, overwrite=args.overwrite)
        print(f"wrote {len(targets)} DoRA PEFT directories under {args.out}")
        return EXIT_OK
    try:
        merged = merge_dora(aset, args.method, base_model=args.base_model, lam=args.lam, density=args.density,
                            rank=args.rank, seed=args.seed, device=device)
    except (KeyError, ValueError) as exc:
        raise HydraError(f"{args.method}: {exc}") from None
    merged.save_peft(args.out, overwrite=args.overwrite)
    print(f"{args.method} (DoRA): rank {merged.merged.rank}, magnitudes averaged over tasks; {note}: "
          f"{merged.loss:.4g}; storage {merged.storage:,} numbers = {merged.storage / total:.3f} of keeping all "
          f"{len(aset.tasks)} adapters; wrote DoRA PEFT directory {args.out}")
    return EXIT_OK
