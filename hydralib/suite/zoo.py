"""Train and evaluate the whole adapter zoo, in parallel worker processes.

``python -m hydralib.suite.zoo --preset default --root data/adapters --results data/results/zoo.json``

1. converts the base model once (cached outside git);
2. trains every missing adapter of :func:`~hydralib.suite.training.zoo_jobs`
   in ``--workers`` processes (they share one GPU, or the CPU cores);
3. evaluates, also sharded: the base model zero-shot on every task, every
   adapter on its own task's test split, and the LoRA cross-task transfer
   matrix (``--n-transfer`` test examples per task);
4. merges the shards into one results JSON, written atomically.

Training is resumable: finished adapters are kept. ``--splits`` reads the task
splits from a JSON dump (:func:`dump_splits`), for machines without the data
packages the suite is generated from.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..atomic import atomic_file
from .tasks import Example, TaskSplits, make_suite, preset_task
from .training import zoo_jobs

SPLITS = ("train", "validation", "test")
KINDS = ("lora", "control", "vera")


def dump_splits(preset, path: str | Path) -> Path:
    """Write every task's splits as gzipped JSON ``{task: {split: [[prompt, answer], ...]}}``."""
    data = {}
    for task in preset.tasks:
        splits = preset_task(preset, task)
        data[task] = {name: [[e.prompt, e.answer] for e in splits[name]] for name in SPLITS}
    with atomic_file(path, overwrite=True) as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            json.dump({"preset": preset.name, "seed": preset.seed, "tasks": data}, fh)
    return Path(path)


def load_splits(path: str | Path, seed: int = 0) -> dict[str, TaskSplits]:
    """Read :func:`dump_splits` output back into ``{task: TaskSplits}``."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    return {
        task: TaskSplits(task=task, seed=data.get("seed", seed),
                         **{name: tuple(Example(p, a, task) for p, a in parts[name]) for name in SPLITS})
        for task, parts in data["tasks"].items()
    }


def _jobs(preset, kinds, tasks=None) -> list:
    """The zoo's jobs of ``kinds``, only those of ``tasks`` when given."""
    return [j for j in zoo_jobs(preset, kinds) if tasks is None or j.task in tasks]


def _evaluation_units(preset, kinds=KINDS, tasks=None) -> list[tuple]:
    """Base model and transfer matrix come with the ``lora`` kind; own-task scores with every kind.

    ``tasks``: only the units of these tasks (base scores, own scores, transfer rows of their adapters).
    """
    chosen = [t for t in preset.tasks if tasks is None or t in tasks]
    units = [("base", t) for t in chosen] if "lora" in kinds else []
    jobs = _jobs(preset, kinds, tasks)
    groups = sorted({j.group for j in jobs})
    units += [("own", g, j.task) for g in groups for j in jobs if j.group == g]
    if "lora" in kinds:
        units += [("transfer", t) for t in chosen]
    return units


def run_worker(preset, root: Path, splits, shard: int, n_shards: int, n_transfer: int, device, out: Path,
               kinds=KINDS, tasks=None) -> None:
    """Train this shard's adapters, then evaluate this shard's units; write the shard's results JSON."""
    from ..adapters import load_adapters
    from .evaluation import evaluate, transfer_matrix
    from .models import load_base_model
    from .training import train_jobs

    torch.manual_seed(0)
    model, tokenizer = load_base_model(preset, device=device)
    jobs = _jobs(preset, kinds, tasks)[shard::n_shards]
    start = time.perf_counter()
    train_jobs(preset, root, jobs, splits=splits, device=device, progress=False,
               command="python -m hydralib.suite.zoo", model_and_tokenizer=(model, tokenizer))
    train_seconds = time.perf_counter() - start
    results: dict = {"base": {}, "own": {}, "transfer": {}, "train_seconds": train_seconds}
    lora_dirs = {j.task: j.directory(root) for j in zoo_jobs(preset, ("lora",))}
    for unit in _evaluation_units(preset, kinds, tasks)[shard::n_shards]:
        if unit[0] == "base":
            task = unit[1]
            results["base"][task] = evaluate(model, tokenizer, {task: splits[task].test}, progress=False,
                                               compute_dtype=preset.compute_dtype)[task]
        elif unit[0] == "own":
            group, task = unit[1], unit[2]
            aset = load_adapters([root / group / task], tasks=[task], base_model=model)
            results["own"].setdefault(group, {})[task] = evaluate(
                model, tokenizer, {task: splits[task].test}, adapters=aset, progress=False,
                compute_dtype=preset.compute_dtype)[task]
        else:
            adapter = unit[1]
            aset = load_adapters([lora_dirs[adapter]], tasks=[adapter])
            probe = {t: splits[t].test[:n_transfer] for t in preset.tasks}
            row = transfer_matrix(model, tokenizer, probe, aset, progress=False,
                                  compute_dtype=preset.compute_dtype)[0]
            results["transfer"][adapter] = dict(zip(preset.tasks, row.tolist()))
    results["seconds"] = time.perf_counter() - start
    with atomic_file(out, overwrite=True) as tmp:
        tmp.write_text(json.dumps(results))


def merge_results(preset, shard_files, n_transfer: int, extra: dict, previous: dict | None = None) -> dict:
    """One results dict from the shards' JSON files.

    ``previous`` (an earlier results dict, e.g. before training another kind)
    is kept where the shards have nothing newer: its base scores, transfer
    rows and own-task groups that this run did not evaluate.
    """
    merged: dict = {"preset": preset.name, "base_model": preset.base_model, "n_test": preset.n_test,
                    "n_transfer": n_transfer, "base": {}, "own": {}, "transfer": {}, "worker_seconds": []}
    if previous:
        merged["base"].update(previous.get("base", {}))
        for group, scores in previous.get("own", {}).items():
            merged["own"][group] = dict(scores)
        old = previous.get("transfer") or {}
        for adapter, row in zip(old.get("adapters", []), old.get("matrix", [])):
            merged["transfer"][adapter] = dict(zip(old["tasks"], row))
        merged["n_transfer"] = previous.get("n_transfer", n_transfer)
        merged["worker_seconds"] = list(previous.get("worker_seconds", []))
    for path in shard_files:
        part = json.loads(Path(path).read_text())
        merged["base"].update(part["base"])
        for group, scores in part["own"].items():
            merged["own"].setdefault(group, {}).update(scores)
        merged["transfer"].update(part["transfer"])
        merged["worker_seconds"].append({"train": part["train_seconds"], "total": part["seconds"]})
    order = list(preset.tasks)
    merged["base"] = {t: merged["base"][t] for t in order if t in merged["base"]}
    merged["own"] = {g: {t: s[t] for t in order if t in s} for g, s in sorted(merged["own"].items())}
    merged["transfer"] = {"adapters": [t for t in order if t in merged["transfer"]], "tasks": order,
                          "matrix": [[merged["transfer"][a][t] for t in order] for a in order if a in merged["transfer"]]}
    merged.update(extra)
    return merged


def main(argv=None) -> int:
    from ..presets import get_device, get_preset

    p = argparse.ArgumentParser(prog="python -m hydralib.suite.zoo", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None)
    p.add_argument("--root", default="data/adapters")
    p.add_argument("--results", default="data/results/zoo.json")
    p.add_argument("--splits", default=None, help="gzipped JSON of the splits (default: generate them)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--n-transfer", type=int, default=12, help="test examples per task in the transfer matrix")
    p.add_argument("--kinds", default=",".join(KINDS), help="adapter kinds to train and evaluate (lora,control,vera)")
    p.add_argument("--control-seeds", default=None,
                   help="comma-separated seeds of the initialisation-control set (default: the preset's)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks: train and evaluate only these (delete an adapter to retrain it)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = get_preset(args.preset)
    tasks = tuple(args.tasks.split(",")) if args.tasks else None
    unknown = sorted(set(tasks or ()) - set(preset.tasks))
    if unknown:
        p.error(f"unknown tasks {unknown} for preset {preset.name!r}")
    if args.control_seeds:
        preset = preset.with_overrides(control_seeds=tuple(int(s) for s in args.control_seeds.split(",")))
    device = get_device(args.device)
    root = Path(args.root)
    shard_dir = root / ".shards"
    if args.worker is not None:
        splits = load_splits(args.splits) if args.splits else make_suite(preset)
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, args.workers)))
        run_worker(preset, root, splits, args.worker, args.workers, args.n_transfer, device,
                   shard_dir / f"shard{args.worker}.json", kinds=tuple(args.kinds.split(",")), tasks=tasks)
        return 0

    from .models import load_base_model

    start = time.perf_counter()
    load_base_model(preset)  # converts once, before the workers start
    if not args.splits:
        args.splits = str(dump_splits(preset, root / ".splits.json.gz"))
    shard_dir.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "hydralib.suite.zoo", "--root", str(root), "--workers", str(args.workers),
            "--n-transfer", str(args.n_transfer), "--splits", args.splits, "--device", str(device),
            "--kinds", args.kinds] + (["--control-seeds", args.control_seeds] if args.control_seeds else [])
    if tasks:
        base += ["--tasks", args.tasks]
    if args.preset:
        base += ["--preset", args.preset]
    procs = [subprocess.Popen(base + ["--worker", str(i)]) for i in range(args.workers)]
    codes = [proc.wait() for proc in procs]
    if any(codes):
        print(f"zoo: workers failed with exit codes {codes}", file=sys.stderr)
        return 1
    extra = {"device": str(device), "workers": args.workers, "wall_seconds": time.perf_counter() - start,
             "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    previous = json.loads(Path(args.results).read_text()) if Path(args.results).is_file() else None
    shards = [shard_dir / f"shard{i}.json" for i in range(args.workers)]
    merged = merge_results(preset, shards, args.n_transfer, extra, previous=previous)
    with atomic_file(args.results, overwrite=True) as tmp:
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"zoo: {sum(len(v) for v in merged['own'].values())} adapters evaluated in "
          f"{merged['wall_seconds']:.0f} s; results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
