"""`hydralib info`: tasks, modules, ranks, scalings and the storage table of PEFT adapters."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_OK, add_lazy_arguments, load_for_command, text_table as _table


def _fmt_set(values) -> str:
    values = sorted(set(values))
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def info_summary(aset) -> dict:
    """JSON-ready summary of an adapter set: tasks, modules, ranks, scalings, storage."""
    from .. import storage

    rows = storage.storage_table(aset)
    by_label = {r.label: r for r in rows}
    return {
        "kind": aset.kind,
        "adapter_type": aset.adapter_type,
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", help="PEFT adapter directories or glob patterns")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_lazy_arguments(p)


def run(args) -> int:
    from .. import storage
    aset = load_for_command(args)
    summary = info_summary(aset)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return EXIT_OK
    print(f"{len(aset.tasks)} {aset.adapter_type.upper()} adapters, {len(aset.modules)} modules, "
          f"base model {aset.base_model or '(not recorded)'}\n")
    if aset.magnitudes:
        print("DoRA: ranks and scalings are those of the direction update s B A; each module also stores a "
              "magnitude vector (d_out numbers, counted in params)\n")
    elif "adalora" in aset.adapter_type:
        print("AdaLoRA: read as LoRA of the kept rank (A = lora_E * lora_A, scaling lora_alpha / init_r)\n")
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
