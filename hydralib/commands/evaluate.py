"""`hydralib evaluate`: exact match of adapters on suite tasks."""

from __future__ import annotations

import argparse
import json

from ..errors import HydraError
from .common import EXIT_OK, described, read_json_object, text_table as _table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="*", help="PEFT adapter directories or globs (none: the base model alone)")
    p.add_argument("--preset", default=None, help="tiny, default or paper (default: $HYDRALIB_PRESET or 'default')")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="suite tasks to evaluate (default: the adapters' names that are suite tasks, else all)")
    p.add_argument("--mapping", default=None,
                   help="JSON file {task: adapter} (per-task heads); default: the adapter of the same name. Every "
                        "key must be a task of the preset; the adapters mapped to must be among those given")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", type=int, default=None, help="at most this many examples per task")
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace --json if it exists")


def _few(names) -> str:
    names = list(names)
    return ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")


def read_mapping(path: str | None, preset) -> dict[str, str] | None:
    """``{task: adapter}`` from ``path``: adapter names are strings and every task is a task of ``preset``
    (a key that is not can never be used: most likely a typo). Errors name ``path``."""
    mapping = read_json_object(path, "mapping")
    if mapping is None:
        return None
    for task, adapter in mapping.items():
        if not isinstance(adapter, str) or not adapter:
            raise HydraError(f"{path}: task {task!r} must map to an adapter name (a non-empty string), "
                             f"got {described(adapter)}")
    unknown = [t for t in mapping if t not in preset.tasks]
    if unknown:
        which = f"{unknown[0]!r} is not a task" if len(unknown) == 1 else f"{unknown[:3]} are not tasks"
        raise HydraError(f"{path}: {which} of the {preset.name!r} preset ({_few(preset.tasks)})")
    return mapping


def run(args) -> int:
    from ..adapters import load_adapters
    from ..atomic import atomic_file, check_writable
    from ..presets import get_preset
    from ..suite.evaluation import evaluate
    from ..suite.models import load_base_model
    from ..suite.tasks import preset_task

    if args.json:
        check_writable(args.json, args.overwrite)
    preset = get_preset(args.preset)
    mapping = read_mapping(args.mapping, preset)  # the side file is checked before loading anything
    if mapping and not args.adapters:
        raise HydraError(f"{args.mapping}: maps tasks to adapters, but no adapters were given")
    model, tokenizer = load_base_model(preset)
    aset = load_adapters(args.adapters, base_model=model) if args.adapters else None
    if args.tasks:
        tasks = list(args.tasks)
    elif mapping:
        tasks = list(mapping)
    elif aset is not None and set(aset.tasks) <= set(preset.tasks):
        tasks = list(aset.tasks)
    else:
        tasks = list(preset.tasks)
    unknown = [t for t in tasks if t not in preset.tasks]
    if unknown:
        raise HydraError(f"evaluate: tasks {unknown[:3]} are not in the {preset.name!r} preset; use --tasks or --mapping")
    if aset is not None:
        mapped = {t: mapping[t] for t in tasks if t in (mapping or {})}
        not_given = sorted(set(mapped.values()) - set(aset.tasks))
        if not_given:
            raise HydraError(f"{args.mapping}: maps tasks to adapters {not_given[:3]} that were not given "
                             f"(adapters: {_few(aset.tasks)})")
        missing = sorted({t for t in tasks if t not in mapped} - set(aset.tasks))
        if missing:
            raise HydraError(f"evaluate: no adapter named {missing[:3]} among {aset.tasks[:5]}; pass --mapping")
    examples = {}
    for task in tasks:
        split = preset_task(preset, task)[args.split]
        examples[task] = split[: args.limit] if args.limit else split
    scores = evaluate(model, tokenizer, examples, adapters=aset, mapping=mapping, compute_dtype=preset.compute_dtype)
    print(_table([[t, v["adapter"] or "(base model)", v["n"], f"{v['exact_match']:.3f}"] for t, v in scores.items()],
                 ["task", "adapter", "n", "exact match"]))
    mean = sum(v["exact_match"] for v in scores.values()) / len(scores)
    print(f"mean exact match over {len(scores)} tasks: {mean:.3f}")
    if args.json:
        with atomic_file(args.json, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps({"preset": preset.name, "split": args.split, "scores": scores}, indent=1))
    return EXIT_OK
