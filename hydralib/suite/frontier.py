"""The efficiency-performance frontier: every merge method on the zoo, tuned on validation, scored on test.

One run (:func:`run_frontier`) does, on a preset's LoRA zoo:

1. **tuning** on the validation split (``n_tune`` examples per task), the same
   procedure for every tunable method: the global scale ``lam`` is searched on
   a doubling grid from 1 (1, 2, 4, ... and 0.5) until the mean validation
   exact match stops improving; then, for methods that prune, ``density`` in
   (0.2, 0.5, 0.8) at the chosen ``lam``. Task weights are ``1/N`` for the
   methods that sum (task arithmetic, DARE, peft ``linear``) and 1 for those
   that average the sign-agreeing entries (TIES, DARE-TIES), so ``lam = 1``
   means "the average update" for all of them;
2. **scoring** on the first ``n_eval`` test examples of every task: the
   individual LoRAs (the reference), the dW-space baselines
   (:mod:`hydralib.merge.baselines`), peft's own ``add_weighted_adapter``
   (factor space: ``linear``, ``ties``, ``dare_ties``), and HydraOpt over a grid
   of heads x rank x side;
3. **storage** of each (numbers stored, relative to keeping every adapter;
   bytes in half precision).

Relative performance is the paper's: the mean over tasks of merged exact match
divided by the task's own-LoRA exact match on the same examples (tasks whose
own score is 0 are left out of the mean and counted).

The result is a JSON-ready dict keyed by a hash of its inputs (the adapter
files, the method list and the sample sizes); :func:`frontier_results` loads
the committed file when the hash matches and recomputes otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

FRONTIER_VERSION = 1
SUMMING = {"task_arithmetic", "dare_linear", "magnitude_prune", "peft_linear"}
DENSITIES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class MethodSpec:
    """One point (or tuned family) of the frontier.

    ``family``: ``"individual"``, ``"baseline"`` (dW space, :func:`~hydralib.merge.merge_adapters`),
    ``"peft"`` (``add_weighted_adapter``, factor space) or ``"hydraopt"``.
    ``method``: the baseline's name, ``"linear"``/``"ties"``/``"dare_ties"``
    for peft, ``"exact"`` for HydraOpt. ``params``: fixed arguments (HydraOpt:
    heads, rank, side). ``tune``: hyper-parameters searched on validation.
    """

    name: str
    family: str
    method: str
    params: dict = field(default_factory=dict)
    tune: tuple[str, ...] = ()


def default_methods(preset, clustered_heads: int | None = None) -> list[MethodSpec]:
    """The frontier of the merging issue: individual LoRAs; TA, TIES, DARE, DARE-TIES (tuned);
    peft's linear / ties / dare_ties (tuned); HydraOpt with heads in {1, application, language,
    clustered K, task} x rank in {r, 2r} x side in {A, B}."""
    r = preset.lora_rank
    k = clustered_heads or max(2, round(math.sqrt(len(preset.tasks))))
    specs = [MethodSpec("individual", "individual", "individual")]
    for name in ("task_arithmetic", "ties", "dare_linear", "dare_ties"):
        tune = ("lam",) if name == "task_arithmetic" else ("lam", "density")
        specs.append(MethodSpec(name, "baseline", name, {"rank": r}, tune))
    for name in ("linear", "ties", "dare_ties"):
        specs.append(MethodSpec(f"peft_{name}", "peft", name, {}, ("lam",) if name == "linear" else ("lam", "density")))
    heads: list = [1, "application", "language", k, "task"]
    for side in ("A", "B"):
        for rank in (r, 2 * r):
            for h in heads:
                specs.append(MethodSpec(f"hydraopt-{side}-{h}-r{rank}", "hydraopt", "exact",
                                        {"heads": h, "rank": rank, "side": side}))
    return specs


# ----------------------------------------------------------------------------- building each method


def _peft_merge(directories, tasks, aset, combination: str, lam: float, density: float | None):
    """peft's ``add_weighted_adapter`` on the adapters loaded from their directories; returns a one-adapter set."""
    from ..adapters import AdapterSet
    from ..bench.peft_model import load_peft_model, merged_factors

    shapes = {m: aset.shape(m) for m in aset.modules}
    layers = 1 + max(int(m.split("layers.")[1].split(".")[0]) for m in aset.modules)
    d_model = max(shape[1] for shape in shapes.values())
    d_kv = min(shape[0] for shape in shapes.values())
    model = load_peft_model(directories, tasks, layers, d_model, d_kv)
    n = len(tasks)
    w = [lam / n] * n if f"peft_{combination}" in SUMMING else [lam] * n
    kwargs = {"density": density} if combination != "linear" else {}
    model.add_weighted_adapter(list(tasks), w, "merged", combination_type=combination, **kwargs)
    factors = merged_factors(model, "merged")
    missing = set(aset.modules) - set(factors)
    if missing:
        raise RuntimeError(f"hydralib.suite.frontier: peft merge lacks modules {sorted(missing)[:3]}")
    merged = {m: (A.clone(), B.clone(), s) for m, (A, B, s) in factors.items() if m in set(aset.modules)}
    return AdapterSet.from_factors({"merged": merged}, base_model=aset.base_model)


def build_method(spec: MethodSpec, aset, directories: Sequence[Path], values: dict):
    """``(adapter set to evaluate, task -> adapter mapping, numbers stored, extra info)`` for one setting."""
    from ..merge import hydraopt, merge_adapters
    from ..storage import lora_module_params

    tasks = list(aset.tasks)
    if spec.family == "individual":
        stored = sum(lora_module_params(*aset.shape(m), aset.rank(t, m)) for t in tasks for m in aset.modules)
        return aset, {t: t for t in tasks}, stored, {}
    if spec.family == "baseline":
        n = len(tasks)
        weights = [1.0 / n] * n if spec.method in SUMMING else [1.0] * n
        merged = merge_adapters(aset, spec.method, weights=weights, lam=values.get("lam", 1.0),
                                density=values.get("density", 0.5 if "density" in spec.tune else None),
                                rank=spec.params.get("rank"), seed=0, progress=False)
        return merged.to_adapter_set("merged"), {t: "merged" for t in tasks}, merged.storage, {}
    if spec.family == "peft":
        merged = _peft_merge(directories, tasks, aset, spec.method, values.get("lam", 1.0),
                             values.get("density", 0.5) if spec.method != "linear" else None)
        stored = sum(merged.rank("merged", m) * sum(merged.shape(m)) for m in merged.modules)
        return merged, {t: "merged" for t in tasks}, stored, {}
    if spec.family == "hydraopt":
        result = hydraopt(aset, heads=spec.params["heads"], rank=spec.params["rank"], side=spec.params["side"],
                          solver=spec.method, progress=False)
        heads_set = result.to_adapter_set()
        info = {"heads": result.n_heads, "loss": result.total_loss, "floor": result.total_floor,
                "energy": result.total_energy, "relative_loss": result.total_loss / result.total_energy,
                "task_to_head": result.task_to_head}
        return heads_set, {t: t for t in tasks}, result.storage, info
    raise ValueError(f"hydralib.suite.frontier: unknown family {spec.family!r}")


# ----------------------------------------------------------------------------- scoring


def score(model, tokenizer, examples: dict, eval_set, mapping: dict, compute_dtype=None) -> dict[str, float]:
    """Exact match per task of ``eval_set`` under ``mapping`` (teacher forced, :func:`~.evaluation.evaluate`)."""
    from .evaluation import evaluate

    scores = evaluate(model, tokenizer, examples, adapters=eval_set, mapping=mapping, progress=False,
                      compute_dtype=compute_dtype)
    return {t: v["exact_match"] for t, v in scores.items()}


def relative(scores: dict[str, float], own: dict[str, float]) -> tuple[float, int]:
    """Mean over tasks of ``scores[t] / own[t]`` (tasks with own score 0 left out) and how many were left out."""
    ratios = [scores[t] / own[t] for t in scores if own.get(t, 0) > 0]
    return (sum(ratios) / len(ratios) if ratios else float("nan")), len(scores) - len(ratios)


def tune(evaluate_at: Callable[[dict], float], spec: MethodSpec, max_lam: float = 64.0,
         min_lam: float = 1 / 128) -> tuple[dict, list]:
    """Search ``spec.tune`` with ``evaluate_at(values) -> mean validation score``; returns (best values, trials).

    ``lam``: from 1, doubled while the score improves (up to ``max_lam``); if
    doubling never helped, halved until the score gets worse (down to ``min_lam``; on a tie the best
    value stays, so a merge that scores 0 until its scale is small enough is still found).
    Then ``density`` over :data:`DENSITIES` at the chosen ``lam``. No setting is evaluated twice.
    """
    trials: list = []

    def run(values):
        for v, s in trials:
            if v == values:
                return s
        s = evaluate_at(values)
        trials.append((dict(values), s))
        return s

    best = {"lam": 1.0}
    if "density" in spec.tune:
        best["density"] = 0.5
    if "lam" in spec.tune:
        best_score = run(best)
        lam = 1.0
        while lam * 2 <= max_lam:
            candidate = {**best, "lam": lam * 2}
            s = run(candidate)
            if s <= best_score:
                break
            best, best_score, lam = candidate, s, lam * 2
        lam = best["lam"]
        while best["lam"] <= 1.0 and lam / 2 >= min_lam:  # doubling did not help: halve instead
            lam /= 2
            candidate = {**best, "lam": lam}
            s = run(candidate)
            if s < best_score:
                break
            if s > best_score:  # a tie goes on halving without moving: a plateau (a merge that scores 0
                best, best_score = candidate, s  # everywhere, scaled N times too large) gives no signal
    if "density" in spec.tune:
        best_score = run(best)
        for d in DENSITIES:
            candidate = {**best, "density": d}
            s = run(candidate)
            if s > best_score:
                best, best_score = candidate, s
    return best, [{"values": v, "score": s} for v, s in trials]


def inputs_hash(directories: Sequence[Path], specs: Sequence[MethodSpec], n_eval: int, n_tune: int,
                preset_name: str) -> str:
    """sha256 of the adapter weight files, the method list, the sample sizes and :data:`FRONTIER_VERSION`."""
    from ..manifest import sha256
    from ..peft_io import WEIGHTS_NAME

    digest = hashlib.sha256()
    for d in directories:
        digest.update(Path(d).name.encode())
        digest.update(sha256(Path(d) / WEIGHTS_NAME).encode())
    digest.update(json.dumps([asdict(s) for s in specs], sort_keys=True, default=str).encode())
    digest.update(f"{n_eval}/{n_tune}/{preset_name}/{FRONTIER_VERSION}".encode())
    return digest.hexdigest()


def claim(claims: Path | None, name: str) -> bool:
    """Take the method ``name`` for this worker: create ``claims / name`` exclusively; False when another worker
    already took it. Always True without a claims directory."""
    import os

    if claims is None:
        return True
    Path(claims).mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(Path(claims) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def sub_zoo_args(prog: str, description: str, groups_flag: str, default_groups: Sequence[str], argv=None):
    """The command line of a sub-zoo module (``train`` or ``measure`` a tuple of groups: recipes, adapter types):
    ``(args, worker, groups)``. A training worker (``--worker i/n``) or a claiming measurement worker runs torch on
    ``$OMP_NUM_THREADS`` threads (default 1), so that n of them share the cores."""
    import argparse
    import os

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("action", choices=["train", "measure"])
    p.add_argument("--n-eval", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    p.add_argument("--preset", default=None)
    p.add_argument(f"--{groups_flag}", default=",".join(default_groups))
    p.add_argument("--worker", default=None, help="i/n: train every n-th job from i (run n of them in parallel)")
    args = p.parse_args(argv)
    worker = tuple(int(x) for x in args.worker.split("/")) if args.worker else None
    if worker or args.claims:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return args, worker, tuple(getattr(args, groups_flag).split(","))


def save_row(path: Path, row: dict) -> dict:
    """Cache one measured row as JSON at ``path`` (atomically, creating its folder); returns ``row``."""
    from ..atomic import atomic_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(row), encoding="utf-8")
    return row


def stored_rows(path: Path, keys: set, section: str) -> dict:
    """Rows of a stored result JSON whose key (recorded per row) is still wanted: ``{key: row}``, from every entry
    of ``result[section]`` (its ``structure`` row and its ``points``). A result measured for fewer entries, or
    before a point was added, gives the rows it has, so a rerun measures only what is new."""
    if not Path(path).is_file():
        return {}
    stored = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = {}
    for entry in stored.get(section, {}).values():
        for row in [entry.get("structure", {})] + entry.get("points", []):
            if row.get("key") in keys:
                rows[row["key"]] = row
    return rows


def stored_result(path: Path, expected_hash: str) -> dict | None:
    """The JSON result at ``path`` when its ``"hash"`` is ``expected_hash``, else None."""
    if not Path(path).is_file():
        return None
    stored = json.loads(Path(path).read_text(encoding="utf-8"))
    return stored if stored.get("hash") == expected_hash else None


def write_result(path: Path, result: dict) -> None:
    """Write a result JSON atomically (indented, newline-terminated)."""
    from ..atomic import atomic_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def run_claiming_workers(module_args: Sequence[str], workers: int, what: str) -> None:
    """Run ``python -m <module_args> --claims DIR`` in ``workers`` processes of ``cpu_count // workers`` threads
    sharing one claims directory (:func:`claim`); raise if any fails."""
    import os
    import subprocess
    import sys
    import tempfile

    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, "-m", *module_args, "--claims", str(Path(tmp) / "claims")],
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)}) for _ in range(workers)]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"{what}: workers failed with exit codes {codes}")


def method_rows(todo: Sequence[MethodSpec], cache: Path, row_key: Callable[[MethodSpec], str],
                build: Callable, score_on: Callable, progress: bool = True, desc: str = "frontier",
                claims: Path | None = None) -> list[dict]:
    """One result row per method of ``todo``: tuned on validation (:func:`tune`, when ``spec.tune``), then scored on test.

    The harness shared by the LoRA and the VeRA frontier. ``build(spec, values)`` returns
    ``(eval_set, mapping, stored numbers, info dict)`` for the method at the tuned ``values``;
    ``score_on(split, eval_set, mapping)`` returns ``{task: exact match}`` on ``"validation"`` or
    ``"test"``. Every finished row is written (atomically) to ``cache / "<name>-<row_key(spec)[:16]>.json"``
    and read back instead of recomputed, so an interrupted or sharded run resumes where it stopped.
    ``claims``: a directory shared by worker processes that each get the whole list: a worker computes a
    method only if it is the first to :func:`claim` it, and skips it otherwise (dynamic load balancing:
    whoever is free takes the next method; the rows of the skipped ones come from the other workers).
    """
    from ..atomic import atomic_file

    rows = []
    for spec in tqdm(todo, desc=desc, disable=not progress):
        row_file = Path(cache) / f"{spec.name}-{row_key(spec)[:16]}.json"
        if row_file.is_file():  # finished by an earlier (interrupted or sharded) run on the same inputs
            rows.append(json.loads(row_file.read_text(encoding="utf-8")))
            continue
        if not claim(claims, row_file.stem):
            continue
        t0 = time.perf_counter()
        values, trials = {}, []
        if spec.tune:
            def evaluate_at(v, spec=spec):
                eval_set, mapping, _, _ = build(spec, v)
                s = score_on("validation", eval_set, mapping)
                return sum(s.values()) / len(s)

            values, trials = tune(evaluate_at, spec)
        eval_set, mapping, stored, info = build(spec, values)
        scores = score_on("test", eval_set, mapping)
        rows.append({"name": spec.name, "family": spec.family, "method": spec.method, "params": spec.params,
                     "tuned": values, "trials": trials, "scores": scores, "stored": int(stored), **info,
                     "seconds": time.perf_counter() - t0})
        Path(cache).mkdir(parents=True, exist_ok=True)
        with atomic_file(row_file, overwrite=True) as tmp:
            tmp.write_text(json.dumps(rows[-1]), encoding="utf-8")
    return rows


def run_frontier(preset=None, specs: Sequence[MethodSpec] | None = None, n_eval: int = 50, n_tune: int = 16,
                 model_and_tokenizer=None, progress: bool = True, shard: tuple[int, int] | None = None,
                 claims: Path | None = None) -> dict:
    """Tune and score every method of ``specs`` (default :func:`default_methods`) on a preset's LoRA zoo.

    ``shard=(i, n)`` runs only the methods ``specs[i::n]`` and returns their raw
    rows (``"partial": True``); :func:`finish` combines the shards' rows. With
    ``claims`` (a directory shared by the shards) every shard walks all methods
    and computes those it claims first (:func:`method_rows`).
    Every finished method's row is kept in ``results/frontier-rows/`` (keyed by
    a hash of its inputs), so an interrupted run resumes where it stopped.
    """
    from ..presets import get_preset
    from .artifacts import load_zoo, results_path, zoo_dir
    from .models import load_base_model
    from .tasks import preset_task

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    aset = load_zoo(preset, "lora")
    tasks = list(aset.tasks)
    directories = [zoo_dir(preset) / "adapters" / "lora" / t for t in tasks]
    specs = list(specs or default_methods(preset))
    model, tokenizer = model_and_tokenizer or load_base_model(preset)
    splits = {t: preset_task(preset, t) for t in tasks}
    test = {t: splits[t].test[:n_eval] for t in tasks}
    validation = {t: splits[t].validation[:n_tune] for t in tasks}
    cdt = preset.compute_dtype
    start = time.perf_counter()
    todo = specs if shard is None or claims is not None else specs[shard[0]::shard[1]]
    rows = method_rows(
        todo, results_path(preset, "frontier-rows").with_suffix(""),
        row_key=lambda spec: inputs_hash(directories, [spec], n_eval, n_tune, preset.name),
        build=lambda spec, values: build_method(spec, aset, directories, values),
        score_on=lambda split, eval_set, mapping: score(model, tokenizer, validation if split == "validation"
                                                        else test, eval_set, mapping, cdt),
        progress=progress, desc="frontier", claims=claims)
    result = {"hash": inputs_hash(directories, specs, n_eval, n_tune, preset.name), "preset": preset.name,
              "n_eval": n_eval, "n_tune": n_tune, "tasks": tasks, "compute_dtype": cdt,
              "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - start, "rows": rows}
    if shard is not None:
        return {**result, "partial": True}
    return finish([result], specs)


def finish(parts: Sequence[dict], specs: Sequence[MethodSpec]) -> dict:
    """Combine raw results (one per shard) into the frontier: rows in ``specs`` order with exact match,
    relative performance against the individual adapters (LoRA or VeRA), relative storage and fp16 bytes."""
    by_name = {row["name"]: row for part in parts for row in part["rows"]}
    missing = [s.name for s in specs if s.name not in by_name]
    if missing:
        raise ValueError(f"hydralib.suite.frontier.finish: no result for methods {missing[:3]}")
    rows = [by_name[s.name] for s in specs]
    own = next((r["scores"] for r in rows if r["family"] == "individual"), None)
    if own is None:
        raise ValueError("hydralib.suite.frontier.finish: the method list must include the individual adapters "
                         "(family 'individual'), the reference of relative performance")
    total = next(r["stored"] for r in rows if r["family"] == "individual")
    for row in rows:
        row["exact_match"] = sum(row["scores"].values()) / len(row["scores"])
        row["relative"], row["left_out"] = relative(row["scores"], own)
        row["relative_storage"] = row["stored"] / total
        row["bytes_fp16"] = 2 * row["stored"]
    first = parts[0]
    return {**{k: v for k, v in first.items() if k not in ("rows", "partial", "seconds")},
            "workers": len(parts), "seconds": max(p["seconds"] for p in parts), "rows": rows}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (storage, performance) not dominated by another (less or equal storage and
    greater or equal performance, one of them strictly), sorted by storage. Of several identical points
    only the first (in storage order, then input order) is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _run_sharded(preset, n_eval: int, n_tune: int, workers: int) -> dict:
    """:func:`run_frontier` in ``workers`` processes of ``cpu_count // workers`` torch threads each; a worker
    that is free takes the next method nobody has claimed (:func:`claim`)."""
    import os
    import subprocess
    import sys
    import tempfile

    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"shard{i}.json" for i in range(workers)]
        procs = [subprocess.Popen([sys.executable, "-m", "hydralib.suite.frontier", "--preset", preset.name,
                                   "--n-eval", str(n_eval), "--n-tune", str(n_tune), "--shard", f"{i}/{workers}",
                                   "--shard-out", str(out), "--claims", str(Path(tmp) / "claims")],
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
                 for i, out in enumerate(outs)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"hydralib.suite.frontier: shard workers failed with exit codes {codes}")
        parts = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    return finish(parts, default_methods(preset))


def frontier_results(preset=None, n_eval: int = 50, n_tune: int = 16, recompute: bool = False,
                     workers: int = 1, progress: bool = True, stored_only: bool = False) -> dict | None:
    """The frontier of a preset: the stored ``results/frontier.json`` when its input hash matches, else recomputed
    (and stored), in ``workers`` processes. ``default``: about a CPU-minute per method; ``tiny``: seconds.

    ``stored_only``: return None instead of recomputing. ``progress``: tqdm bars on stderr while recomputing
    (off in chapters, where stderr would render like an error).
    """
    from ..atomic import atomic_file
    from ..presets import get_preset
    from .artifacts import ensure_zoo, results_path, zoo_dir, zoo_groups

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    ensure_zoo(preset, results=False)
    path = results_path(preset, "frontier")
    specs = default_methods(preset)
    root = zoo_dir(preset) / "adapters" / "lora"
    directories = [root / t for t in zoo_groups(preset).get("lora", [])]  # complete adapters, as load_zoo reads
    expected = inputs_hash(directories, specs, n_eval, n_tune, preset.name)
    if path.is_file() and not recompute:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("hash") == expected:
            return stored
    if stored_only:
        return None
    if workers > 1:
        result = _run_sharded(preset, n_eval, n_tune, workers)
    else:
        result = run_frontier(preset, specs, n_eval=n_eval, n_tune=n_tune, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def main(argv=None) -> int:
    """``python -m hydralib.suite.frontier [--preset P] [--recompute]``: compute (or load) and print the frontier."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m hydralib.suite.frontier", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None)
    p.add_argument("--n-eval", type=int, default=50)
    p.add_argument("--n-tune", type=int, default=16)
    p.add_argument("--recompute", action="store_true", help="recompute even when the stored hash matches")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each cpu_count/workers threads)")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    p.add_argument("--shard-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.shard:
        from ..atomic import atomic_file

        i, n = (int(x) for x in args.shard.split("/"))
        torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
        part = run_frontier(args.preset, n_eval=args.n_eval, n_tune=args.n_tune, shard=(i, n), progress=False,
                            claims=Path(args.claims) if args.claims else None)
        with atomic_file(args.shard_out, overwrite=True) as tmp:
            tmp.write_text(json.dumps(part), encoding="utf-8")
        return 0
    result = frontier_results(args.preset, n_eval=args.n_eval, n_tune=args.n_tune, recompute=args.recompute,
                              workers=args.workers)
    for row in result["rows"]:
        print(f"{row['name']:32s} storage {row['relative_storage']:7.3f}  exact match {row['exact_match']:.3f}  "
              f"relative {row['relative']:.3f}  tuned {row['tuned']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
