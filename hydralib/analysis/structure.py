"""Structure in task x task similarity: metadata groups, clustering, the initialisation control.

Inputs are task x task similarity matrices ``(N, N)`` (from
:mod:`hydralib.analysis.similarity`, any kind and side, one module or averaged
over modules) and one metadata dict per task (keys ``application``,
``language``, ``seed``; optionally ``task`` naming the underlying task of a
seed replicate).

* :func:`group_similarity`: mean similarity of pairs in the same application
  (different language), the same language (different application), the same
  task (replicates, e.g. other seeds) and unrelated pairs.
* :func:`cluster_tasks`: hierarchical clustering (``scipy.cluster.hierarchy``)
  on distance ``1 - similarity``: linkage, leaf order, flat clusters for K;
  :func:`cluster_agreement` scores clusters against application / language
  with the adjusted Rand index.
* The initialisation control. PEFT initialises lora_A with kaiming-uniform
  from the global torch seed, so adapters trained with the same seed start
  from the same A. :func:`init_distance` / :func:`adapter_init_distance`
  measure ``||A_i - A_i^0||_F / ||A_i^0||_F`` (how far each A moved; acts on
  the A factor); :func:`peft_initial_lora_a` recomputes A^0 for a seed with
  peft itself; :func:`seed_control` splits A-side and B-side similarity by
  same / different seed and same / different task.
* :func:`summarise_asymmetry`: the numbers a chapter needs for a verdict, as a
  JSON-serialisable dict.

Worked example
--------------
>>> import numpy as np
>>> from hydralib.analysis.structure import group_similarity, cluster_tasks
>>> meta = [{"application": a, "language": l} for a in ("qa", "reply") for l in ("en", "fr")]
>>> sim = np.array([[1., .2, .8, .1], [.2, 1., .1, .8], [.8, .1, 1., .2], [.1, .8, .2, 1.]])
>>> g = group_similarity(sim, meta)                       # pairs sharing a language are alike
>>> round(g["same_language"]["mean"], 3), round(g["same_application"]["mean"], 3)
(0.8, 0.2)
>>> cluster_tasks(sim, n_clusters=2).labels.tolist()      # {qa-en, reply-en} and {qa-fr, reply-fr}
[1, 2, 1, 2]

Metadata groups and clustering live in :mod:`hydralib.analysis.groups`, the
initialisation control in :mod:`hydralib.analysis.initialisation`; every name
is importable from here.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .core import aggregate, as_adapter_set, parse_module_name, task_metadata, to_jsonable
from .groups import (
    CATEGORIES,
    TaskClustering,
    _require,
    _square,
    _stats,
    adjusted_rand_index,
    cluster_agreement,
    cluster_tasks,
    group_similarity,
    pair_categories,
    seed_masks,
    similarity_to_distance,
    task_identity,
)
from .initialisation import (
    _MEASURES,
    _skeleton,
    _target_shapes,
    adapter_init_distance,
    adapter_seed_control,
    init_distance,
    peft_initial_lora_a,
    seed_control,
)


# --------------------------------------------------------------------------- summary


def _side_summary(sim, kind: str, corrected: bool) -> dict:
    return {
        "overall": sim.offdiagonal_means(kind, by="all", corrected=corrected).get("all"),
        "by_projection": sim.offdiagonal_means(kind, by="projection", corrected=corrected),
        "by_layer": sim.offdiagonal_means(kind, by="layer", corrected=corrected),
    }


def _pooled(cells: Mapping[str, Mapping]) -> float:
    """Pair-weighted mean over the cells of one seed condition (same and different task)."""
    n = sum(c["n_pairs"] for c in cells.values())
    if not n:
        return float("nan")
    return sum(c["mean"] * c["n_pairs"] for c in cells.values() if c["n_pairs"]) / n


def _verdict(a: float, b: float) -> str:
    if not (np.isfinite(a) and np.isfinite(b)):
        return "undefined"
    return "A" if a > b else "B" if b > a else "tie"


def analyse_adapters(
    adapters,
    q: float = 0.9,
    kinds: Sequence[str] | None = None,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    normalize: bool = False,
    rtol: float = 1e-6,
    device=None,
    progress: bool = False,
    num_threads: int | None = 1,
):
    """Similarity and spectra of every module in one pass (the Gram blocks are computed once per module).

    Returns ``(SimilarityResult, SpectraResult)``, the same as
    :func:`~hydralib.analysis.similarity.adapter_similarity` and
    :func:`~hydralib.analysis.spectra.adapter_spectra` with the same arguments.
    """
    from .core import iter_stacks, torch_threads
    from .similarity import DEFAULT_KINDS, SimilarityResult, module_similarity
    from .spectra import SpectraResult, module_spectra

    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    kinds = list(DEFAULT_KINDS if kinds is None else kinds)
    matrices: dict[str, dict] = {k: {} for k in kinds}
    spectra, names = {}, []
    with torch_threads(num_threads):
        for module, stack in iter_stacks(adapters, modules, tasks, device=device, progress=progress):
            names.append(module)
            for kind, value in module_similarity(stack, kinds, rtol).items():
                matrices[kind][module] = value
            spectra[module] = module_spectra(stack, q=q, normalize=normalize)
    return (SimilarityResult(tasks=tasks, modules=names, matrices=matrices),
            SpectraResult(tasks=tasks, q=q, modules=spectra))


def summarise_asymmetry(
    adapters,
    q: float = 0.9,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    similarity=None,
    spectra=None,
    init_a: Mapping | None = None,
    init_by_seed: bool = False,
    rtol: float = 1e-6,
    progress: bool = False,
    num_threads: int | None = 1,
) -> dict:
    """The numbers a chapter needs for a verdict on "which side is shared?", JSON-serialisable.

    ``adapters``: an :class:`~hydralib.adapters.AdapterSet` (or mapping). Pass
    precomputed ``similarity`` (:class:`~hydralib.analysis.similarity.SimilarityResult`
    with the default kinds) and/or ``spectra``
    (:class:`~hydralib.analysis.spectra.SpectraResult`) to avoid recomputing.
    ``init_a`` (see :func:`adapter_init_distance`) adds how far A moved.

    Keys of the result:

    * ``measures[m]`` for m in cosine / overlap / cka: ``a`` and ``b`` (mean
      over task pairs i != j and modules: ``overall``, ``by_projection``,
      ``by_layer``); for overlap and cka also ``chance_a``/``chance_b`` and the
      chance-corrected ``corrected_a``/``corrected_b`` (0 = chance, 1 = identical);
      ``measures["cosine_delta"]``: cosine of the updates.
    * ``verdict[m]``: ``{"overall": {"a", "b", "more_similar"}, "by_projection": ...}``
      comparing A with B on the chance-corrected values (raw for cosine; its chance is 0);
      when seeds differ also ``"by_seed"``: the same over same-seed pairs only and
      over different-seed pairs only (the initialisation control's verdict).
    * ``spectra``: shared directions for ``q`` (and their fraction of the maximum),
      effective ranks; overall and per projection.
    * ``groups`` (if metadata has application and language): per measure and side
      (``overlap_a``, ``cka_b``, ...), :func:`group_similarity` of the module-averaged
      matrix (chance-corrected for overlap and cka; same-seed pairs only when seeds differ).
    * ``seed_control`` (if metadata seeds differ): :func:`adapter_seed_control`.
    * ``init_distance`` (if ``init_a``): mean ``||A - A0|| / ||A0||`` overall and per projection.

    ``num_threads``: torch threads during the computation (default 1, see
    :func:`~hydralib.analysis.core.torch_threads`).
    """
    from .similarity import DEFAULT_KINDS, adapter_similarity
    from .spectra import adapter_spectra

    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    if similarity is None and spectra is None:
        similarity, spectra = analyse_adapters(adapters, q=q, modules=modules, tasks=tasks, rtol=rtol,
                                               progress=progress, num_threads=num_threads)
    if similarity is None:
        similarity = adapter_similarity(adapters, DEFAULT_KINDS, modules=modules, tasks=tasks, rtol=rtol,
                                        progress=progress, num_threads=num_threads)
    if spectra is None:
        spectra = adapter_spectra(adapters, q=q, modules=modules, tasks=tasks, progress=progress,
                                  num_threads=num_threads)
    if list(similarity.tasks) != tasks or list(spectra.tasks) != tasks:
        raise ValueError("hydralib.analysis.structure: precomputed results were made for other tasks")
    meta = task_metadata(adapters, tasks)
    names = list(similarity.modules)

    out: dict = {
        "schema": "hydralib.analysis.summarise_asymmetry/1",
        "n_tasks": len(tasks), "n_modules": len(names), "tasks": tasks,
        "projections": list(dict.fromkeys(parse_module_name(m).projection for m in names)),
        "layers": sorted({parse_module_name(m).layer for m in names if parse_module_name(m).layer is not None}),
        "q": spectra.q,
    }

    measures, verdict = {}, {}
    for measure, (ka, kb, corrected) in _MEASURES.items():
        entry = {"a": _side_summary(similarity, ka, False), "b": _side_summary(similarity, kb, False)}
        if corrected:
            entry["chance_a"] = _side_summary(similarity, "chance_" + ka, False)
            entry["chance_b"] = _side_summary(similarity, "chance_" + kb, False)
            entry["corrected_a"] = _side_summary(similarity, ka, True)
            entry["corrected_b"] = _side_summary(similarity, kb, True)
        measures[measure] = entry
        va, vb = (entry["corrected_a"], entry["corrected_b"]) if corrected else (entry["a"], entry["b"])
        verdict[measure] = {
            "compared": "chance-corrected" if corrected else "raw",
            "overall": {"a": va["overall"], "b": vb["overall"], "more_similar": _verdict(va["overall"], vb["overall"])},
            "by_projection": {
                p: {"a": va["by_projection"][p], "b": vb["by_projection"][p],
                    "more_similar": _verdict(va["by_projection"][p], vb["by_projection"][p])}
                for p in va["by_projection"]
            },
        }
    measures["cosine_delta"] = _side_summary(similarity, "cosine_delta", False)
    out["measures"] = measures
    out["verdict"] = verdict

    spectra_fields = ("shared_a", "shared_b", "max_shared_a", "max_shared_b", "shared_a_fraction",
                      "shared_b_fraction", "erank_a", "erank_b", "erank_delta", "stacked_erank_a", "stacked_erank_b")
    out["spectra"] = {
        "overall": {f: aggregate(spectra.values(f), by="all")["all"] for f in spectra_fields},
        "by_projection": {f: spectra.aggregate(f, "projection") for f in spectra_fields},
    }

    def per_side(fn):
        result = {}
        for measure, (ka, kb, corrected) in _MEASURES.items():
            for side, kind in (("a", ka), ("b", kb)):
                mats = similarity.mean_matrix(kind, by="all", corrected=corrected)
                result[f"{measure}_{side}"] = fn(mats["all"])
        return result

    if meta and all("application" in m and "language" in m for m in meta):
        seeds = {str(m.get("seed")) for m in meta}
        seed_filter = "same" if len(seeds) > 1 and all("seed" in m for m in meta) else None
        out["groups"] = {"seed_filter": seed_filter,
                         **per_side(lambda mat: group_similarity(mat, meta, seed=seed_filter))}

    if meta and all("seed" in m for m in meta) and len({str(m["seed"]) for m in meta}) > 1:
        control = adapter_seed_control(adapters, similarity=similarity, tasks=tasks)
        out["seed_control"] = control
        for measure, entry in control.items():
            by_seed = {}
            for seed_key in ("same_seed", "different_seed"):
                a = _pooled(entry["overall"]["a"][seed_key])
                b = _pooled(entry["overall"]["b"][seed_key])
                by_seed[seed_key] = {"a": a, "b": b, "more_similar": _verdict(a, b)}
            out["verdict"][measure]["by_seed"] = by_seed

    if init_a is not None:
        dist = adapter_init_distance(adapters, init_a, by_seed=init_by_seed, modules=names, tasks=tasks)
        means = {m: float(np.mean(v)) for m, v in dist.items()}
        out["init_distance"] = {"overall": aggregate(means, by="all")["all"],
                                "by_projection": aggregate(means, by="projection")}

    return to_jsonable(out)
