"""The storage frontier: every way to keep N adapters in fewer bytes, scored on one bytes axis with intervals.

One run (:func:`run_storage_frontier`) takes a preset's LoRA zoo and, for every
method of :func:`storage_methods` (merges, HydraOpt, rank truncation,
quantization, ComPEFT, Compress then Serve, and compositions):

1. builds the compressed set (:mod:`hydralib.compress`) and writes it, so that its
   **bytes** are the size of the file (relative to the adapters' own fp16
   ``adapter_model.safetensors`` files);
2. measures its **relative loss** on the updates, ``sum ||dW'_i - dW_i||^2 / sum ||dW_i||^2``;
3. scores every test example of every task (the first ``n_eval``): **exact match**
   and the fraction of answer tokens right (teacher forced,
   :func:`~hydralib.suite.evaluation.answer_scores_ids`). Per-example hits are kept
   so that :mod:`hydralib.stats` can bootstrap them.

It also computes HydraOpt's ablation grid (heads x rank, side A) as relative loss
and storage, which needs no evaluation (:func:`hydraopt_grid`).

Nothing is tuned here: merges reuse the scale and density that the merging
frontier tuned on validation (``frontier.json``); the other families have no
free parameter beyond their knob. Rows are cached one file per method, so an
interrupted run resumes; ``workers`` processes share the methods dynamically.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

VERSION = 1
GRID_HEADS = (1, 2, 5, 8, 10, 20, 40)
GRID_RANKS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class StorageSpec:
    """One point: ``family`` in individual / merge / hydraopt / truncate / quantize / compeft / jd, and its knobs."""

    name: str
    family: str
    params: dict = field(default_factory=dict)


def storage_methods(preset) -> list[StorageSpec]:
    """The points scored (most telling first, so that a partial run has them): the reference; quantization at
    8/4/3/2 bits; truncation; HydraOpt with one head per task at r' = r, fp16 and int4; truncation + int4;
    Compress then Serve (diagonal); ComPEFT; the best tuned merge (DARE-TIES).

    Each point costs about 10 CPU-minutes on the default zoo (40 tasks x 100 test examples); the list is
    cut to what a 2-core run affords, and the HydraOpt grid (:func:`hydraopt_grid`) adds heads x rank as
    relative loss without evaluation."""
    r = preset.lora_rank
    S = StorageSpec
    half, quarter = max(1, r // 2), max(1, r // 4)
    return _dedupe([
        S("individual", "individual"),
        *[S(f"int{b}", "quantize", {"codec": f"int{b}"}) for b in (8, 4, 3, 2)],
        S(f"truncate-r{quarter}", "truncate", {"rank": quarter}),
        S(f"hydraopt-task-r{r}", "hydraopt", {"heads": "task", "rank": r}),
        S(f"hydraopt-task-r{r}+int4", "hydraopt", {"heads": "task", "rank": r, "codec": "int4"}),
        S(f"truncate-r{quarter}+int4", "truncate", {"rank": quarter, "codec": "int4"}),
        S("truncate-r1+int4", "truncate", {"rank": 1, "codec": "int4"}),
        S(f"jd-diag-c{8 * r}", "jd", {"c": 8 * r, "diagonal": True}),
        S("compeft-0.3", "compeft", {"density": 0.3}),
        S("dare_ties", "merge", {"method": "dare_ties", "rank": r}),
    ])


def _dedupe(specs: Sequence[StorageSpec]) -> list[StorageSpec]:
    seen, out = set(), []
    for s in specs:
        if s.name not in seen:
            seen.add(s.name)
            out.append(s)
    return out


def merge_values(preset, method: str) -> dict:
    """The scale (and density) the merging frontier tuned on validation for ``method``; defaults without one."""
    from .frontier import frontier_results

    stored = frontier_results(preset, stored_only=True)
    for row in (stored or {}).get("rows", []):
        if row["name"] == method:
            return dict(row.get("tuned") or {})
    return {"lam": 1.0, **({"density": 0.5} if method != "task_arithmetic" else {})}


def build(spec: StorageSpec, aset, preset):
    """The :class:`~hydralib.compress.CompressedAdapters` of one point, and extra info for its row."""
    from .. import compress
    from ..merge import hydraopt, merge_adapters
    from .frontier import SUMMING

    p = dict(spec.params)
    if spec.family in ("individual", "quantize"):
        return compress.quantize(aset, p.get("codec", "fp16")), {}
    if spec.family == "truncate":
        return compress.truncate(aset, p["rank"], codec=p.get("codec", "fp16")), {}
    if spec.family == "compeft":
        return compress.compeft(aset, p["density"]), {}
    if spec.family == "jd":
        return compress.compress_then_serve(aset, p["c"], diagonal=p["diagonal"]), {}
    if spec.family == "hydraopt":
        result = hydraopt(aset, heads=p["heads"], rank=p["rank"], side="A", progress=False)
        return compress.from_hydraopt(result, p.get("codec", "fp16")), {"heads_k": result.n_heads}
    if spec.family == "merge":
        n = len(aset.tasks)
        values = merge_values(preset, p["method"])
        weights = [1.0 / n] * n if p["method"] in SUMMING else [1.0] * n
        merged = merge_adapters(aset, p["method"], weights=weights, lam=values.get("lam", 1.0),
                                density=values.get("density"), rank=p["rank"], seed=0, progress=False)
        return compress.from_merged(merged.to_adapter_set("merged"), aset.tasks, spec.name), {"tuned": values}
    raise ValueError(f"hydralib.suite.storage_frontier: unknown family {spec.family!r}")


def score_examples(model, tokenizer, pairs: dict, eval_set, compute_dtype=None, mapping: dict | None = None) -> dict:
    """``{task: {"hits": "0110...", "graded": mean fraction of answer tokens right}}`` of ``eval_set``: task ``t`` runs
    with its adapter ``mapping[t]`` of ``eval_set`` (default: the adapter named ``t``)."""
    from ..runtime import applied
    from .evaluation import answer_scores_ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    out = {}
    for task, task_pairs in pairs.items():
        with applied(model, eval_set, (mapping or {}).get(task, task)):
            exact, graded = answer_scores_ids(model, task_pairs, pad, compute_dtype=compute_dtype)
        out[task] = {"hits": "".join("1" if h else "0" for h in exact.tolist()), "graded": float(graded.mean())}
    return out


def inputs_hash(directories, specs, n_eval: int, preset_name: str) -> str:
    """sha256 of the adapter weight files, the method list, ``n_eval``, the preset and :data:`VERSION`."""
    from ..manifest import sha256
    from ..peft_io import WEIGHTS_NAME

    digest = hashlib.sha256()
    for d in directories:
        digest.update(Path(d).name.encode())
        digest.update(sha256(Path(d) / WEIGHTS_NAME).encode())
    digest.update(json.dumps([asdict(s) for s in specs], sort_keys=True, default=str).encode())
    digest.update(f"{n_eval}/{preset_name}/{VERSION}".encode())
    return digest.hexdigest()


def hydraopt_grid(aset, heads=GRID_HEADS, ranks=GRID_RANKS, reference_bytes: int | None = None) -> list[dict]:
    """HydraOpt (side A, exact) at every heads x rank: relative loss, storage (numbers) and file bytes.

    Heads: 1, ``"application"`` or ``"language"`` where K matches their number of values, N as ``"task"``
    (always included), otherwise K clusters (:func:`~hydralib.merge.group_by_clustering`). K above N is skipped.
    """
    from ..compress import from_hydraopt
    from ..merge import hydraopt

    n = len(aset.tasks)
    by_count = {}
    for key in ("application", "language"):
        values = {aset.metadata[t].get(key) for t in aset.tasks}
        if None not in values:
            by_count.setdefault(len(values), key)
    rows = []
    for k in sorted({k for k in heads if k <= n} | {n}):  # K = N (one head per task) always
        grouping = "task" if k == n else by_count.get(k, k)
        for rank in ranks:
            result = hydraopt(aset, heads=grouping, rank=rank, side="A", progress=False)
            nbytes = from_hydraopt(result).nbytes()
            rows.append({"heads": k, "grouping": str(grouping), "rank": rank, "storage": result.storage,
                         "bytes": nbytes, "relative_bytes": nbytes / reference_bytes if reference_bytes else None,
                         "relative_loss": result.total_loss / result.total_energy})
    return rows


def _row(spec, aset, preset, model, tokenizer, pairs, ref_bytes) -> dict:
    from ..compress import relative_loss

    t0 = time.perf_counter()
    cset, info = build(spec, aset, preset)
    nbytes = cset.nbytes()
    loss = relative_loss(cset, aset)
    t_build = time.perf_counter() - t0
    scores = score_examples(model, tokenizer, pairs, cset.to_adapter_set(), preset.compute_dtype)
    return {"name": spec.name, "family": spec.family, "params": spec.params, "method": cset.method,
            "bytes": nbytes, "relative_bytes": nbytes / ref_bytes, "payload_bytes": cset.payload_bytes(),
            "relative_loss": loss, "info": {**cset.info, **info}, "scores": scores,
            "build_seconds": t_build, "seconds": time.perf_counter() - t0}


def _context(preset):
    from ..presets import get_preset
    from .artifacts import ensure_zoo, load_zoo, zoo_dir, zoo_groups

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    ensure_zoo(preset, results=False)
    tasks = zoo_groups(preset).get("lora", [])
    directories = [zoo_dir(preset) / "adapters" / "lora" / t for t in tasks]
    return preset, load_zoo, directories


def run_rows(preset, n_eval: int = 100, progress: bool = True, claims: Path | None = None) -> list[dict]:
    """Compute (or read from the row cache) every method's row; with ``claims``, only the methods this process
    claims first (:func:`~hydralib.suite.frontier.claim`)."""
    from ..atomic import atomic_file
    from ..compress import adapter_file_bytes
    from .artifacts import results_path
    from .frontier import claim
    from .models import load_base_model
    from .tasks import encode_example, preset_task

    preset, load_zoo, directories = _context(preset)
    aset = load_zoo(preset, "lora")
    specs = _dedupe(storage_methods(preset))
    cache = results_path(preset, "storage-frontier-rows").with_suffix("")
    ref_bytes = adapter_file_bytes(directories)
    model = tokenizer = pairs = None
    rows = []
    for spec in tqdm(specs, desc="storage frontier", disable=not progress):
        row_file = cache / f"{spec.name}-{inputs_hash(directories, [spec], n_eval, preset.name)[:16]}.json"
        if row_file.is_file():
            rows.append(json.loads(row_file.read_text(encoding="utf-8")))
            continue
        if not claim(claims, row_file.stem):
            continue
        if model is None:
            model, tokenizer = load_base_model(preset)
            pairs = {t: [encode_example(e, tokenizer) for e in preset_task(preset, t).test[:n_eval]] for t in aset.tasks}
        rows.append(_row(spec, aset, preset, model, tokenizer, pairs, ref_bytes))
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_file(row_file, overwrite=True) as tmp:
            tmp.write_text(json.dumps(rows[-1]), encoding="utf-8")
    return rows


def run_storage_frontier(preset=None, n_eval: int = 100, workers: int = 1, progress: bool = True) -> dict:
    """Every method's row (in ``workers`` processes of ``cpu_count // workers`` threads), the HydraOpt grid, and the
    bootstrap statistics (:func:`hydralib.stats.summarise`), as one JSON-ready dict keyed by :func:`inputs_hash`."""
    from ..compress import adapter_file_bytes
    from ..stats import summarise
    from .frontier import run_claiming_workers

    preset, load_zoo, directories = _context(preset)
    specs = _dedupe(storage_methods(preset))
    start = time.perf_counter()
    if workers > 1:
        run_claiming_workers(["hydralib.suite.storage_frontier", "--preset", preset.name, "--n-eval", str(n_eval)],
                             workers, "hydralib.suite.storage_frontier")
    rows = {r["name"]: r for r in run_rows(preset, n_eval, progress=progress)}
    aset = load_zoo(preset, "lora")
    ref_bytes = adapter_file_bytes(directories)
    grid = hydraopt_grid(aset, reference_bytes=ref_bytes)
    ordered = [rows[s.name] for s in specs]
    return {"hash": inputs_hash(directories, specs, n_eval, preset.name), "preset": preset.name, "n_eval": n_eval,
            "tasks": list(aset.tasks), "reference_bytes": ref_bytes, "compute_dtype": preset.compute_dtype,
            "workers": workers, "seconds": time.perf_counter() - start,
            "cpu_seconds": sum(r["seconds"] for r in ordered), "rows": ordered, "hydraopt_grid": grid,
            "stats": summarise(ordered)}


def storage_frontier_results(preset=None, n_eval: int = 100, recompute: bool = False, workers: int = 1,
                             progress: bool = True, stored_only: bool = False) -> dict | None:
    """The stored ``results/storage-frontier.json`` when its hash matches, else recomputed and stored (or None with
    ``stored_only``). ``default``: about an hour on 2 cores; ``tiny``: a minute."""
    from .artifacts import results_path
    from .frontier import stored_result, write_result

    preset, _, directories = _context(preset)
    path = results_path(preset, "storage-frontier")
    stored = stored_result(path, inputs_hash(directories, _dedupe(storage_methods(preset)), n_eval, preset.name))
    if stored is not None and not recompute:
        return stored
    if stored_only:
        return None
    result = run_storage_frontier(preset, n_eval=n_eval, workers=workers, progress=progress)
    write_result(path, result)
    return result


def main(argv=None) -> int:
    """``python -m hydralib.suite.storage_frontier [--preset P] [--workers W] [--recompute]``."""
    import argparse
    import os

    p = argparse.ArgumentParser(prog="python -m hydralib.suite.storage_frontier", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None)
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="worker processes (each cpu_count/workers threads)")
    p.add_argument("--recompute", action="store_true", help="recompute even when the stored hash matches")
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.claims:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        run_rows(args.preset, args.n_eval, progress=False, claims=Path(args.claims))
        return 0
    result = storage_frontier_results(args.preset, n_eval=args.n_eval, recompute=args.recompute, workers=args.workers)
    for row in result["rows"]:
        st = result["stats"]["methods"][row["name"]]
        print(f"{row['name']:28s} bytes {row['relative_bytes']:7.4f}  loss {row['relative_loss']:.4f}  "
              f"relative {st['relative']:.3f} [{st['ci'][0]:.3f}, {st['ci'][1]:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
