"""`hydralib analyze`: the A/B asymmetry of PEFT LoRA adapters, as summary.json and figures."""

from __future__ import annotations

import argparse
import json

from ..errors import HydraError
from .common import EXIT_OK, read_metadata


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", help="PEFT LoRA adapter directories or glob patterns")
    p.add_argument("--out", required=True, help="directory for summary.json and the figures (written atomically)")
    p.add_argument("--metadata", default=None,
                   help="JSON file {task: {application, language, seed}} for group and seed comparisons")
    p.add_argument("--q", type=float, default=0.9, help="energy fraction for 'shared directions' (default 0.9)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting
    from ..adapters import load_adapters
    from ..analysis import analyse_adapters, cluster_tasks, summarise_asymmetry, to_jsonable
    from ..analysis import figures
    from ..atomic import atomic_dir, check_writable

    check_writable(args.out, args.overwrite)
    metadata = read_metadata(args.metadata)
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
