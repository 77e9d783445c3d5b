"""Other adapter types, measured: own quality, storage, structure and the bytes frontier of VeRA, DoRA and AdaLoRA.

Per type (the groups :mod:`.adapter_types` trains, and the zoo's VeRA adapters of
the same tasks, :mod:`.adapter_types_vera`), on the first ``n_eval`` test
examples of every task:

* ``structure``: file bytes per adapter, chance-corrected overlap of A and of B
  between tasks (DoRA: of the direction factors; AdaLoRA: of ``lora_E * lora_A``
  and ``lora_B``, the factored LoRA of the kept rank);
* points, each with bytes, relative loss and per-example exact match
  (:func:`hydralib.stats.summarise` against the type's own adapters):

  - AdaLoRA: the LoRA storage frontier's grid
    (:func:`~.storage_frontier.storage_methods`, built by :func:`~.storage_frontier.build`:
    everything that works on LoRA factors works on these) plus HydraOpt with side B;
  - DoRA: HydraOpt on the direction updates with a least-squares magnitude per task
    (:func:`~hydralib.merge.hydraopt_dora`), side A and B; int8 / int4 of the direction
    factors with the magnitudes in fp16; TA and DARE-TIES of the directions (with the
    scale and density the LoRA merging frontier tuned) and the mean magnitude
    (:func:`~hydralib.merge.merge_dora`). Its relative loss is measured
    on the adapted weights ``W_i`` (DoRA is not linear in its factors), not on ``dW``.

Results: ``results/adapter_types.json``, keyed by a hash of the adapter files and
the points. Each (type, point) row is cached under ``results/adapter-types-rows/``
by its own type's files, the point and ``n_eval``, so a rerun measures only what is new.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

VERSION = 1
HYDRA_MAGNITUDE = "lstsq"
#: The groups trained here (the zoo trains VeRA with LoRA).
TYPES = ("dora", "adalora")
#: The types measured, VeRA (the zoo's adapters of the same tasks, :mod:`.adapter_types_vera`) first.
MEASURED = ("vera",) + TYPES
TRAIN_COMMAND = "python -m hydralib.suite.adapter_types train"


def train_types(preset=None, kinds=TYPES, root: str | Path | None = None, worker: tuple[int, int] | None = None,
                progress: bool = True) -> list[Path]:
    """Train the missing adapters of the adapter-type groups (``worker=(i, n)``: every n-th job from i)."""
    from ..presets import get_preset
    from .artifacts import zoo_dir
    from .training import train_sub_zoo, type_jobs

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    if "vera" in kinds:
        raise ValueError("hydralib.suite.adapter_types: VeRA adapters are trained with the zoo "
                         "(`python -m hydralib.suite.zoo --kinds vera`), not here")
    root = Path(root) if root is not None else zoo_dir(preset) / "adapters"
    return train_sub_zoo(preset, type_jobs(preset, kinds), root, worker, progress, TRAIN_COMMAND)


def type_tasks(preset) -> list[str]:
    from .training import type_jobs

    return [j.task for j in type_jobs(preset, ("dora",))]


def type_directories(preset, kind: str, tasks=None) -> list[Path]:
    from .artifacts import zoo_dir

    return [zoo_dir(preset) / "adapters" / kind / t for t in (tasks or type_tasks(preset))]


def type_adapters(preset, kind: str):
    """One type's group as an :class:`~hydralib.adapters.AdapterSet` with task metadata (application, language)."""
    from ..adapters import load_adapters
    from ..errors import HydraError
    from .artifacts import task_metadata
    from .training import is_complete

    tasks = type_tasks(preset)
    if kind == "vera":
        from .adapter_types_vera import vera_type_adapters

        return vera_type_adapters(preset, tasks)
    dirs = type_directories(preset, kind, tasks)
    missing = [d.name for d in dirs if not is_complete(d)]
    if missing:
        raise HydraError(f"hydralib.suite.adapter_types: {dirs[0].parent} lacks {missing[:3]} "
                         f"(train with `{TRAIN_COMMAND}`)")
    metadata = {t: task_metadata(t, seed=preset.seed, group=kind) for t in tasks}
    return load_adapters(dirs, tasks=tasks, metadata=metadata)


def type_points(preset, kind: str) -> list[tuple[str, dict]]:
    """``(name, params)`` of every point measured for ``kind`` (``individual`` first: the reference)."""
    r = preset.lora_rank
    if kind == "vera":
        from .adapter_types_vera import vera_points

        return vera_points(preset)
    if kind == "adalora":
        from .storage_frontier import storage_methods

        points = [(s.name, {"family": s.family, **s.params}) for s in storage_methods(preset)]
    elif kind == "dora":
        points = [("individual", {"family": "individual"})]
        points += [(f"int{b}", {"family": "quantize", "codec": f"int{b}"}) for b in (8, 4)]
        points += [(f"hydraopt-{h}-r{rank}", {"family": "hydraopt", "heads": h, "rank": rank})
                   for h, rank in (("task", r), ("task", max(1, r // 2)), ("application", r), (1, r))]
        points += [(m, {"family": "merge", "method": m, "rank": r}) for m in ("task_arithmetic", "dare_ties")]
    else:
        raise ValueError(f"hydralib.suite.adapter_types: unknown adapter type {kind!r} (vera, dora or adalora)")
    points.append((f"hydraopt-task-r{r}-sideB", {"family": "hydraopt", "heads": "task", "rank": r, "side": "B"}))
    return points


def _files_digest(preset, kind: str) -> str:
    from ..manifest import sha256
    from ..peft_io import WEIGHTS_NAME

    digest = hashlib.sha256()
    for d in type_directories(preset, kind):
        digest.update(f"{kind}/{d.name}/{sha256(d / WEIGHTS_NAME)}".encode())
    return digest.hexdigest()


def row_key(preset, kind: str, name: str, params: dict, n_eval: int, files: str) -> str:
    return hashlib.sha256(f"{VERSION}/{preset.name}/{n_eval}/{kind}/{name}/{params}/{files}".encode()).hexdigest()[:16]


def _build_dora(name: str, params: dict, aset, model, preset):
    """``(compressed DoRA set, extra)`` of one DoRA point: directions and magnitudes in one container."""
    from .. import compress
    from ..merge import hydraopt_dora, merge_dora

    family = params["family"]
    if family in ("individual", "quantize"):
        return compress.compress_adapters(aset, "quantize", codec=params.get("codec", "fp16")), {}
    if family == "hydraopt":
        result = hydraopt_dora(aset, base_model=model, magnitude=HYDRA_MAGNITUDE, heads=params["heads"],
                               rank=params["rank"], side=params.get("side", "A"), progress=False)
        return compress.from_hydraopt(result), {"magnitude_losses": dict(result.losses), "magnitude": HYDRA_MAGNITUDE,
                                                "heads_k": result.hydra.n_heads}
    if family == "merge":  # the scale (and density) the LoRA merging frontier tuned on validation, as for LoRA
        from .frontier import SUMMING
        from .storage_frontier import merge_values

        n, values = len(aset.tasks), merge_values(preset, params["method"])
        weights = [1.0 / n] * n if params["method"] in SUMMING else [1.0] * n
        merged = merge_dora(aset, params["method"], base_model=model, weights=weights, rank=params["rank"],
                            lam=values.get("lam", 1.0), density=values.get("density"), seed=0, progress=False)
        cset = compress.from_merged(merged.merged.to_adapter_set("merged"), aset.tasks, name)
        return compress.with_magnitudes(cset, {t: merged.magnitudes for t in aset.tasks}), {}
    raise ValueError(f"hydralib.suite.adapter_types: unknown DoRA family {family!r}")


def _dora_loss(aset, scored, model) -> float:
    """Relative reconstruction loss of the adapted weights: sum ||W'_i - W_i||^2 / sum ||W_i - W0||^2."""
    from ..merge.dora import dora_base_weights, reconstruction_loss

    W0 = dora_base_weights(aset, model)
    loss, energy = reconstruction_loss(aset, W0, lambda t, m: (*scored.factors(t, m), scored.magnitudes[t][m]))
    return loss / energy if energy > 0 else 0.0


def _point_row(preset, kind, name, params, aset, model, tokenizer, pairs) -> dict:
    from ..compress import adapter_file_bytes, relative_loss
    from .storage_frontier import StorageSpec, build, score_examples

    t0 = time.perf_counter()
    mapping = None
    if kind == "vera":  # numbers in fp16, relative to the VeRA adapters' own numbers (module docstring)
        from .adapter_types_vera import build_vera_point

        scored, mapping, nbytes, ref, rel, extra = build_vera_point(preset, params, aset)
        space = "dW"
    elif kind == "dora":
        cset, extra = _build_dora(name, params, aset, model, preset)
        scored = cset.to_adapter_set()
        nbytes, rel, space = cset.nbytes(), _dora_loss(aset, scored, model), "W"
    else:
        p = {k: v for k, v in params.items() if k != "family"}
        if params["family"] == "hydraopt" and p.get("side", "A") == "B":
            from ..compress import from_hydraopt
            from ..merge import hydraopt

            result = hydraopt(aset, heads=p["heads"], rank=p["rank"], side="B", progress=False)
            cset, extra = from_hydraopt(result), {"heads_k": result.n_heads}
        else:
            cset, extra = build(StorageSpec(name, params["family"], p), aset, preset)
        scored, nbytes, rel, space = cset.to_adapter_set(), cset.nbytes(), relative_loss(cset, aset), "dW"
    if kind != "vera":
        ref = adapter_file_bytes(type_directories(preset, kind, aset.tasks))
    scores = score_examples(model, tokenizer, pairs, scored, preset.compute_dtype, mapping)
    return {"kind": kind, "name": name, "params": params, "bytes": nbytes, "relative_bytes": nbytes / ref,
            "relative_loss": rel, "loss_space": space, "scores": scores, "seconds": time.perf_counter() - t0, **extra}


def _structure(preset, kind, aset) -> dict:
    from ..analysis import summarise_asymmetry
    from ..compress import adapter_file_bytes

    dirs = type_directories(preset, kind, aset.tasks)
    if kind == "vera":  # the vectors' similarity between tasks (no A or B of its own: the projections are shared)
        from .adapter_types_vera import vera_structure

        return {"kind": kind, "name": "structure", "file_bytes": adapter_file_bytes(dirs) / len(dirs),
                "rank_mean": float(aset.rank(aset.tasks[0], aset.modules[0])), **vera_structure(aset)}
    overlap = summarise_asymmetry(aset)["measures"]["overlap"]
    ranks = [aset.rank(t, m) for t in aset.tasks for m in aset.modules]
    return {"kind": kind, "name": "structure", "file_bytes": adapter_file_bytes(dirs) / len(dirs),
            "overlap_a": float(overlap["corrected_a"]["overall"]), "overlap_b": float(overlap["corrected_b"]["overall"]),
            "rank_mean": sum(ranks) / len(ranks), "rank_min": min(ranks), "rank_max": max(ranks)}


def measure_rows(preset=None, kinds=MEASURED, n_eval: int = 50, claims: Path | None = None,
                 progress: bool = True) -> list[dict]:
    """Every (type, point) row, cached one file each (resumable; with ``claims`` shared by worker processes)."""
    from ..presets import get_preset
    from .artifacts import results_path
    from .frontier import claim, save_row, stored_rows
    from .models import load_base_model
    from .tasks import encode_example, preset_task

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    cache = results_path(preset, "adapter-types-rows").with_suffix("")
    files = {k: _files_digest(preset, k) for k in kinds}
    jobs = [(k, "structure", {}) for k in kinds] + [(k, n, p) for k in kinds for n, p in type_points(preset, k)]
    keys = {(k, n): row_key(preset, k, n, p, n_eval, files[k]) for k, n, p in jobs}
    stored = stored_rows(results_path(preset, "adapter_types"), set(keys.values()), "types")
    model = tokenizer = pairs = None
    sets: dict = {}
    rows = []
    for kind, name, params in tqdm(jobs, desc="adapter types", disable=not progress):
        key = keys[kind, name]
        row_file = cache / f"{kind}-{name}-{key}.json"
        if key in stored or row_file.is_file():  # a row of the stored result, or of an interrupted run
            rows.append(stored[key] if key in stored else json.loads(row_file.read_text(encoding="utf-8")))
            continue
        if not claim(claims, row_file.stem):
            continue
        if kind not in sets:
            sets[kind] = type_adapters(preset, kind)
        aset = sets[kind]
        if name == "structure":
            row = _structure(preset, kind, aset)
        else:
            if model is None:
                model, tokenizer = load_base_model(preset)
            if pairs is None:
                pairs = {t: [encode_example(e, tokenizer) for e in preset_task(preset, t).test[:n_eval]]
                         for t in aset.tasks}
            row = _point_row(preset, kind, name, params, aset, model, tokenizer, pairs)
        row["key"] = key
        rows.append(save_row(row_file, row))
    return rows


def _hash(preset, kinds, n_eval) -> str:
    digest = hashlib.sha256(f"{VERSION}/{preset.name}/{n_eval}".encode())
    for k in kinds:
        digest.update(f"{k}/{type_points(preset, k)}/{_files_digest(preset, k)}".encode())
    return digest.hexdigest()


def type_results(preset=None, kinds=MEASURED, n_eval: int = 50, workers: int = 1, recompute: bool = False,
                 stored_only: bool = False, progress: bool = True) -> dict | None:
    """``results/adapter_types.json`` when its hash matches; else measured (in ``workers`` processes) and stored.

    Per type: the structure row, training seconds from the records, every point and
    :func:`hydralib.stats.summarise` of them (reference: the type's own adapters).
    ``stored_only``: the stored result or None, never a computation. The tiny preset trains its groups here.
    """
    from ..presets import get_preset
    from ..stats import summarise
    from .artifacts import ensure_zoo, results_path
    from .frontier import run_claiming_workers, stored_result, write_result
    from .training import RECORD_NAME, is_complete

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    path = results_path(preset, "adapter_types")
    if "vera" in kinds and not stored_only:
        ensure_zoo(preset, results=False)  # the tiny preset trains its zoo (VeRA included) here
    complete = all(is_complete(d) for k in kinds for d in type_directories(preset, k))
    if not complete:
        if stored_only:
            return None
        if preset.name == "default":  # the committed groups: the error names what is missing and how to train it
            for kind in kinds:
                type_adapters(preset, kind)
        train_types(preset, [k for k in kinds if k in TYPES], progress=False)
    expected = _hash(preset, kinds, n_eval)
    stored = stored_result(path, expected)
    if stored is not None and not recompute:
        return stored
    if stored_only:
        return None
    if workers > 1:
        run_claiming_workers(["hydralib.suite.adapter_types", "measure", "--preset", preset.name, "--n-eval",
                              str(n_eval), "--types", ",".join(kinds)], workers, "hydralib.suite.adapter_types")
    rows = measure_rows(preset, kinds, n_eval, progress=progress)
    out = {"hash": expected, "preset": preset.name, "n_eval": n_eval, "types": {}}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        points = [r for r in mine if r["name"] != "structure"]
        records = [json.loads((d / RECORD_NAME).read_text()) for d in type_directories(preset, kind)]
        out["types"][kind] = {"structure": next(r for r in mine if r["name"] == "structure"),
                              "training_seconds": sum(r["seconds"] for r in records),
                              "points": points, "stats": summarise(points)}
    write_result(path, out)
    return out


def print_results(result: dict) -> None:
    for kind, r in result["types"].items():
        st = r["structure"]
        similar = (f"cos lambda_d {st['cos_d']:.3f} (moved {st['cos_d_moved']:.3f}) lambda_b {st['cos_b']:.3f}"
                   if kind == "vera" else f"overlap A {st['overlap_a']:.3f} B {st['overlap_b']:.3f}")
        print(f"{kind:8s} {st['file_bytes'] / 1e6:.3f} MB/adapter  {similar}")
        for point in r["points"]:
            m = r["stats"]["methods"][point["name"]]
            print(f"   {point['name']:26s} bytes {point['relative_bytes']:.3f} loss {point['relative_loss']:.4f} "
                  f"relative {m['relative']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]  EM {m['exact_match']:.3f}")
