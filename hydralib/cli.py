"""The ``hydralib`` command line.

Subcommands are registered in :data:`COMMANDS` (name -> (help, add_arguments,
run)). Exit codes scripts can rely on: 0 success, 1 bad input (a clear one-line
message on stderr that names the file and the problem), 2 usage error
(argparse). ``--debug`` shows the traceback instead of the one-line message.

Example
-------
    hydralib info adapters/*            # tasks, modules, ranks, scalings, storage
    hydralib info adapters/* --json     # the same, machine-readable
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .errors import HydraError
from .tables import text_table as _table

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _fmt_set(values) -> str:
    values = sorted(set(values))
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def info_summary(aset) -> dict:
    """JSON-ready summary of an adapter set: tasks, modules, ranks, scalings, storage."""
    from . import storage

    rows = storage.storage_table(aset)
    by_label = {r.label: r for r in rows}
    return {
        "kind": aset.kind,
        "base_model": aset.base_model,
        "tasks": [
            {
                "task": t,
                "source": str(aset.sources.get(t, "")),
                "ranks": sorted({aset.rank(t, m) for m in aset.modules}),
                "scalings": sorted({aset.scaling(t, m) for m in aset.modules}),
                "params": by_label[t].params,
                "bytes": by_label[t].bytes,
                "metadata": aset.metadata[t],
            }
            for t in aset.tasks
        ],
        "modules": [
            {
                "module": m,
                "d_out": aset.shape(m)[0],
                "d_in": aset.shape(m)[1],
                "fan_in_fan_out": aset.module_info(m).fan_in_fan_out,
                "ranks": sorted({aset.rank(t, m) for t in aset.tasks}),
                "scalings": sorted({aset.scaling(t, m) for t in aset.tasks}),
            }
            for m in aset.modules
        ],
        "storage": storage.rows_as_dicts(rows),
    }


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", help="PEFT adapter directories or glob patterns")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _run_info(args) -> int:
    from . import storage
    from .adapters import load_adapters

    aset = load_adapters(args.adapters)
    summary = info_summary(aset)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return EXIT_OK
    print(f"{len(aset.tasks)} {aset.kind.upper()} adapters, {len(aset.modules)} modules, "
          f"base model {aset.base_model or '(not recorded)'}\n")
    print(_table(
        [[t["task"], _fmt_set(t["ranks"]), _fmt_set(t["scalings"]), f"{t['params']:,}",
          storage.human_bytes(t["bytes"])] for t in summary["tasks"]],
        ["task", "ranks", "scalings", "params", "bytes"],
    ))
    print()
    print(_table(
        [[m["module"], f"{m['d_out']} x {m['d_in']}", _fmt_set(m["ranks"]), _fmt_set(m["scalings"])]
         for m in summary["modules"]],
        ["module", "d_out x d_in", "ranks", "scalings"],
    ))
    print()
    print(_table(
        [[r["label"], f"{r['params']:,}", storage.human_bytes(r["bytes"]), f"{r['relative']:.3f}"]
         for r in summary["storage"]],
        ["storage", "params", "bytes", "relative"],
    ))
    return EXIT_OK


def _add_analyze(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", help="PEFT LoRA adapter directories or glob patterns")
    p.add_argument("--out", required=True, help="directory for summary.json and the figures (written atomically)")
    p.add_argument("--metadata", default=None,
                   help="JSON file {task: {application, language, seed}} for group and seed comparisons")
    p.add_argument("--q", type=float, default=0.9, help="energy fraction for 'shared directions' (default 0.9)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _run_analyze(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting
    from .adapters import load_adapters
    from .analysis import analyse_adapters, cluster_tasks, summarise_asymmetry, to_jsonable
    from .analysis import figures
    from .atomic import atomic_dir, check_writable

    check_writable(args.out, args.overwrite)
    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(open(args.metadata, encoding="utf-8").read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HydraError(f"{args.metadata}: cannot read metadata JSON ({exc})") from None
    aset = load_adapters(args.adapters, metadata=metadata)
    if aset.kind != "lora":
        raise HydraError(f"{aset.sources.get(aset.tasks[0], '')}: analyze works on LoRA adapters")
    similarity, spectra = analyse_adapters(aset, q=args.q, progress=True)
    summary = summarise_asymmetry(aset, q=args.q, similarity=similarity, spectra=spectra)
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp, plotting.book_style():
        (tmp / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n", encoding="utf-8")
        for kind in ("overlap", "cosine", "cka"):
            fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
            figures.similarity_pair(axes, similarity, aset.metadata, kind=kind)
            fig.savefig(tmp / f"similarity_{kind}.png")
            plt.close(fig)
        fig, ax = plt.subplots()
        figures.spectra_by_depth(ax, spectra)
        fig.savefig(tmp / "spectra_by_layer.png")
        plt.close(fig)
        if len(aset.tasks) > 2:
            for side in ("a", "b"):
                matrix = similarity.mean_matrix(f"overlap_{side}", by="all")["all"]
                fig, ax = plt.subplots(figsize=(6, max(3, 0.2 * len(aset.tasks))))
                figures.dendrogram(ax, cluster_tasks(matrix, tasks=aset.tasks),
                                   title=f"tasks clustered by {side.upper()}-side overlap")
                fig.savefig(tmp / f"dendrogram_{side}.png")
                plt.close(fig)
    verdict = summary["verdict"]["overlap"]["overall"]
    print(f"{len(aset.tasks)} adapters, {len(aset.modules)} modules: subspace overlap (chance-corrected) "
          f"A {verdict['a']:.3f}, B {verdict['b']:.3f} -> more similar: {verdict['more_similar']}")
    print(f"wrote {args.out}/summary.json and figures")
    return EXIT_OK


def _read_metadata(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HydraError(f"{path}: cannot read metadata JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise HydraError(f"{path}: metadata must be a JSON object {{task: {{key: value}}}}")
    return data


def _add_merge(p: argparse.ArgumentParser) -> None:
    from .merge import MERGE_METHODS, SOLVERS, WEIGHTINGS

    p.add_argument("adapters", nargs="+", help="PEFT LoRA adapter directories or glob patterns")
    p.add_argument("--method", default="hydraopt", choices=["hydraopt", *MERGE_METHODS],
                   help="hydraopt (shared factor + heads) or a dW-space baseline (default hydraopt)")
    p.add_argument("--out", required=True,
                   help="hydraopt: bundle directory; baselines: a PEFT LoRA directory of the merged adapter")
    p.add_argument("--heads", default="task",
                   help="hydraopt: 'task' (one per task), a metadata key (application, language) or an integer K")
    p.add_argument("--rank", type=int, default=None, help="rank of the result (default: the adapters' rank)")
    p.add_argument("--side", default="A", choices=["A", "B"], help="hydraopt: which factor is shared")
    p.add_argument("--solver", default="exact", choices=list(SOLVERS), help="hydraopt solver")
    p.add_argument("--weighting", default="uniform", choices=list(WEIGHTINGS), help="hydraopt task weighting")
    p.add_argument("--lam", type=float, default=1.0, help="baselines: global scaling of the merged dW")
    p.add_argument("--density", type=float, default=None, help="baselines: TIES/DARE density")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step")
    p.add_argument("--metadata", default=None, help="JSON file {task: {application, language}} for --heads")
    p.add_argument("--export-peft", default=None, help="hydraopt: also write one PEFT LoRA directory per task here")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _run_merge(args) -> int:
    from . import storage
    from .adapters import AdapterSet, load_adapters
    from .atomic import check_writable

    check_writable(args.out, args.overwrite)
    if args.export_peft:
        check_writable(args.export_peft, args.overwrite)
    aset = load_adapters(args.adapters, metadata=_read_metadata(args.metadata))
    total = storage.set_params(aset)
    if args.method == "hydraopt":
        from .merge import export_peft, hydraopt

        heads = int(args.heads) if args.heads.isdigit() else args.heads
        try:
            result = hydraopt(aset, heads=heads, rank=args.rank, side=args.side, solver=args.solver,
                              weighting=args.weighting, seed=args.seed, device="cpu")
        except (KeyError, ValueError) as exc:
            raise HydraError(f"hydraopt: {exc}") from None
        result.save(args.out, overwrite=args.overwrite)
        print(f"hydraopt: {result.n_heads} heads, side {args.side}, loss {result.total_loss:.4g} "
              f"(floor {result.total_floor:.4g}, energy {result.total_energy:.4g}); storage {result.storage:,} "
              f"numbers = {result.storage / total:.3f} of keeping all {len(aset.tasks)} adapters")
        if args.export_peft:
            export_peft(result, args.export_peft, overwrite=args.overwrite)
            print(f"wrote {args.out} (bundle) and {len(aset.tasks)} PEFT directories under {args.export_peft}")
        else:
            print(f"wrote {args.out} (bundle)")
        return EXIT_OK
    from .merge import merge_adapters

    try:
        merged = merge_adapters(aset, args.method, lam=args.lam, density=args.density, rank=args.rank, seed=args.seed)
    except (KeyError, ValueError) as exc:
        raise HydraError(f"{args.method}: {exc}") from None
    out = AdapterSet.from_factors({"merged": {m: merged.factors(m) for m in aset.modules}}, base_model=aset.base_model)
    out.save_peft("merged", args.out, overwrite=args.overwrite)
    print(f"{args.method}: rank {merged.rank}, storage {merged.storage:,} numbers = {merged.storage / total:.3f} of "
          f"keeping all {len(aset.tasks)} adapters; wrote PEFT directory {args.out}")
    return EXIT_OK


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="tiny, default or paper (default: $HYDRALIB_PRESET or 'default')")
    p.add_argument("--out", default="data/adapters", help="zoo root; one folder per group (lora, vera, lora-seedN)")
    p.add_argument("--kinds", nargs="+", default=["lora", "vera", "control"], choices=["lora", "vera", "control"])
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: every task of the preset)")
    p.add_argument("--overwrite", action="store_true", help="retrain adapters that are already complete")


def _run_train(args) -> int:
    from .presets import get_preset
    from .suite.training import train_zoo

    preset = get_preset(args.preset)
    command = "hydralib train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else "hydralib train"
    dirs = train_zoo(preset, args.out, kinds=args.kinds, tasks=args.tasks, resume=not args.overwrite,
                     command=command)
    print(f"{len(dirs)} adapters complete under {args.out}")
    return EXIT_OK


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "info": ("print tasks, modules, ranks, scalings and the storage table of adapters", _add_info, _run_info),
    "analyze": ("measure the A/B asymmetry (spectra, cross-task similarity) and write figures + JSON",
                _add_analyze, _run_analyze),
    "merge": ("merge adapters: HydraOpt (bundle, optional per-task PEFT export) or a dW-space baseline",
              _add_merge, _run_merge),
    "train": ("train the adapter zoo of a preset (resumable: finished adapters are kept)", _add_train, _run_train),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydralib", description="Analyse and merge low-rank adapters.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
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
