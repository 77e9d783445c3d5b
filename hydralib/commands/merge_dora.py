"""`hydralib merge` on DoRA adapters: HydraOpt or a baseline on the direction updates, magnitudes per task
(HydraOpt) or averaged (baselines), judged on the adapted weights; needs ``--base-model DIR``.

There is no bundle format holding magnitudes, so ``--out`` receives DoRA PEFT directories: one per task
(``--out/<task>``) for HydraOpt, one for a baseline.
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
    if getattr(args, "quantize", None):
        usage_error(args, "--quantize is not supported for DoRA adapters (the containers hold no magnitude vectors)")
    if args.export_peft:
        usage_error(args, "DoRA adapters: --out already receives the PEFT directories; drop --export-peft")
    total = storage.set_params(aset)
    note = "direction updates merged; relative reconstruction loss of the adapted weights W_i"
    if args.method == "hydraopt":
        targets = check_task_dirs(args.out, aset.tasks, args.overwrite)
        try:
            result = hydraopt_dora(aset, base_model=args.base_model, magnitude=args.magnitude, heads=heads,
                                   rank=args.rank, side=args.side, solver=args.solver, weighting=args.weighting,
                                   seed=args.seed, device=device)
        except (KeyError, ValueError) as exc:
            raise HydraError(f"hydraopt: {exc}") from None
        result.export_peft(args.out, overwrite=args.overwrite)
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
        print(f"hydraopt (DoRA): {result.hydra.n_heads} heads, side {args.side}, magnitudes {result.magnitude}; "
              f"{note}: {losses}; storage {result.storage:,} numbers = {result.storage / total:.3f} of keeping all "
              f"{len(aset.tasks)} adapters")
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
