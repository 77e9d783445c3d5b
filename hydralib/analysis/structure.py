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
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import scipy.cluster.hierarchy as sch
import scipy.spatial.distance as ssd
import torch

from .core import (
    aggregate,
    as_adapter_set,
    parse_module_name,
    task_metadata,
    to_jsonable,
)

CATEGORIES = ("same_task", "same_application", "same_language", "unrelated")


# --------------------------------------------------------------------------- metadata groups


def _square(similarity, n: int | None = None, where: str = "similarity") -> np.ndarray:
    m = np.asarray(similarity, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"hydralib.analysis.structure: {where} must be a square (N, N) matrix, got shape {m.shape}")
    if n is not None and m.shape[0] != n:
        raise ValueError(f"hydralib.analysis.structure: {where} is {m.shape[0]} x {m.shape[0]} but there are {n} tasks")
    return m


def _require(metadata: Sequence[Mapping], keys: Sequence[str], tasks: Sequence[str] | None = None) -> None:
    for i, meta in enumerate(metadata):
        for key in keys:
            if key not in meta:
                name = tasks[i] if tasks is not None else f"#{i}"
                raise ValueError(f"hydralib.analysis.structure: task {name} has no metadata key {key!r}")


def task_identity(meta: Mapping, fallback: str) -> object:
    """What makes two adapters 'the same task': ``(application, language)`` if present, else ``meta['task']``, else the name."""
    if "application" in meta and "language" in meta:
        return (meta["application"], meta["language"])
    return meta.get("task", fallback)


def pair_categories(metadata: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Boolean ``(N, N)`` masks of task pairs (``i != j``) by what they share.

    ``same_task``: same application and language (replicates, e.g. another
    seed); ``same_application``: same application, different language;
    ``same_language``: same language, different application; ``unrelated``:
    neither. Needs ``application`` and ``language`` in every metadata dict.
    """
    _require(metadata, ("application", "language"))
    app = np.array([str(m["application"]) for m in metadata])
    lang = np.array([str(m["language"]) for m in metadata])
    sa, sl = app[:, None] == app[None, :], lang[:, None] == lang[None, :]
    off = ~np.eye(len(metadata), dtype=bool)
    return {
        "same_task": sa & sl & off,
        "same_application": sa & ~sl & off,
        "same_language": ~sa & sl & off,
        "unrelated": ~sa & ~sl & off,
    }


def seed_masks(metadata: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Boolean ``(N, N)`` masks (``i != j``): ``same_seed`` and ``different_seed`` (needs ``seed`` in metadata)."""
    _require(metadata, ("seed",))
    seed = np.array([str(m["seed"]) for m in metadata])
    same = seed[:, None] == seed[None, :]
    off = ~np.eye(len(metadata), dtype=bool)
    return {"same_seed": same & off, "different_seed": ~same & off}


def _stats(matrix: np.ndarray, mask: np.ndarray) -> dict:
    upper = np.triu(mask, k=1)
    values = matrix[upper]
    values = values[np.isfinite(values)]
    return {
        "mean": float(values.mean()) if values.size else float("nan"),
        "std": float(values.std()) if values.size else float("nan"),
        "n_pairs": int(values.size),
    }


def group_similarity(similarity, metadata: Sequence[Mapping], seed: str | None = None) -> dict[str, dict]:
    """Mean, std and number of task pairs per category of :func:`pair_categories` (each pair once).

    ``seed``: ``None`` (all pairs), ``"same"`` or ``"different"`` (only pairs
    trained with the same / different seed; needs ``seed`` in metadata).
    Also returns ``"all"`` (every pair i != j) and, under ``"contrast"``,
    ``same_language - same_application`` means.
    """
    m = _square(similarity, len(metadata))
    masks = pair_categories(metadata)
    if seed is not None:
        if seed not in ("same", "different"):
            raise ValueError(f"hydralib.analysis.structure: seed must be None, 'same' or 'different', got {seed!r}")
        keep = seed_masks(metadata)[f"{seed}_seed"]
        masks = {k: v & keep for k, v in masks.items()}
    else:
        keep = ~np.eye(len(metadata), dtype=bool)
    out = {k: _stats(m, v) for k, v in masks.items()}
    out["all"] = _stats(m, keep)
    out["contrast"] = {"language_minus_application": out["same_language"]["mean"] - out["same_application"]["mean"]}
    return out


# --------------------------------------------------------------------------- clustering


@dataclass
class TaskClustering:
    """Hierarchical clustering of N tasks.

    ``linkage``: scipy linkage matrix ``(N-1, 4)``; ``order``: leaf order
    (optimal leaf ordering), indices into the tasks; ``labels``: flat cluster ids
    ``(N,)`` for ``n_clusters`` (None if not asked); ``distance``: the ``(N, N)``
    distance matrix used; ``tasks``: names, if given.
    """

    linkage: np.ndarray
    order: list[int]
    labels: np.ndarray | None
    distance: np.ndarray
    tasks: list[str] | None = None

    @property
    def ordered_tasks(self) -> list:
        names = self.tasks if self.tasks is not None else list(range(len(self.order)))
        return [names[i] for i in self.order]

    def flat(self, n_clusters: int) -> np.ndarray:
        """Flat cluster ids ``(N,)`` for ``n_clusters`` clusters (``fcluster`` with ``maxclust``)."""
        return sch.fcluster(self.linkage, t=n_clusters, criterion="maxclust")


def similarity_to_distance(similarity) -> np.ndarray:
    """``1 - sim``, symmetrised, zero diagonal, clipped at 0 (for cosine in [-1, 1] distances lie in [0, 2])."""
    m = _square(similarity)
    if not np.isfinite(m).all():
        raise ValueError("hydralib.analysis.structure: the similarity matrix has NaN/Inf entries (a zero adapter?)")
    if not np.allclose(m, m.T, atol=1e-8, rtol=1e-6):
        raise ValueError("hydralib.analysis.structure: the similarity matrix is not symmetric")
    d = 1.0 - (m + m.T) / 2
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, None)


def cluster_tasks(
    similarity,
    n_clusters: int | None = None,
    method: str = "average",
    tasks: Sequence[str] | None = None,
) -> TaskClustering:
    """Cluster tasks hierarchically on ``1 - similarity`` (``scipy.cluster.hierarchy.linkage``).

    ``similarity``: ``(N, N)`` (e.g. A-side overlap averaged over modules).
    ``method``: linkage method (``"average"``, ``"complete"``, ``"single"``;
    ``"ward"`` assumes Euclidean distances). Leaves are ordered by
    ``optimal_leaf_ordering``; ``n_clusters`` gives flat labels.
    """
    d = similarity_to_distance(similarity)
    n = d.shape[0]
    if tasks is not None and len(tasks) != n:
        raise ValueError(f"hydralib.analysis.structure: {len(tasks)} task names for a {n} x {n} matrix")
    if n < 2:
        raise ValueError("hydralib.analysis.structure: clustering needs at least 2 tasks")
    y = ssd.squareform(d, checks=False)
    z = sch.linkage(y, method=method)
    if n > 2:
        z = sch.optimal_leaf_ordering(z, y)
    labels = sch.fcluster(z, t=n_clusters, criterion="maxclust") if n_clusters else None
    return TaskClustering(linkage=z, order=[int(i) for i in sch.leaves_list(z)], labels=labels,
                          distance=d, tasks=list(tasks) if tasks is not None else None)


def adjusted_rand_index(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Adjusted Rand index of two partitions (1 = identical, about 0 = chance; Hubert & Arabie 1985)."""
    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"hydralib.analysis.structure: label arrays must be 1-D of equal length, got {a.shape} and {b.shape}")
    n = a.size
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, bi), 1)

    def comb2(x):
        x = np.asarray(x, dtype=float)
        return (x * (x - 1) / 2).sum()

    index = comb2(table)
    rows, cols = comb2(table.sum(axis=1)), comb2(table.sum(axis=0))
    total = n * (n - 1) / 2
    expected = rows * cols / total if total else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0 if index == maximum else 0.0
    return float((index - expected) / (maximum - expected))


def cluster_agreement(labels: Sequence, metadata: Sequence[Mapping], keys: Sequence[str] = ("application", "language")) -> dict[str, float]:
    """Adjusted Rand index of flat cluster ``labels`` against each metadata key: ``{key: ari}``."""
    _require(metadata, keys)
    return {k: adjusted_rand_index([str(m[k]) for m in metadata], labels) for k in keys}


# --------------------------------------------------------------------------- initialisation control


def init_distance(lora_a, init_a) -> np.ndarray | float:
    """Relative distance from initialisation ``||A - A0||_F / ||A0||_F`` (acts on the A factor).

    ``lora_a``: ``(r, d_in)`` or a batch ``(N, r, d_in)``; ``init_a``: ``(r, d_in)``
    (broadcast) or ``(N, r, d_in)``. Returns a float or ``(N,)``.
    """
    a = torch.as_tensor(lora_a).detach().to(torch.float64)
    a0 = torch.as_tensor(init_a).detach().to(torch.float64)
    if a.shape[-2:] != a0.shape[-2:]:
        raise ValueError(
            f"hydralib.analysis.structure: lora_a {tuple(a.shape)} and its initialisation {tuple(a0.shape)} disagree"
        )
    diff = (a - a0).flatten(-2).norm(dim=-1)
    ref = a0.flatten(-2).norm(dim=-1)
    out = (diff / ref).cpu().numpy()
    return float(out) if out.ndim == 0 else out


def adapter_init_distance(
    adapters,
    init_a: Mapping,
    by_seed: bool = False,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """``{module: (N,)}`` relative distances ``||A_i - A_i^0||_F / ||A_i^0||_F`` of an adapter set.

    ``init_a``: ``{module: A0 (r, d_in)}`` shared by all tasks, or with
    ``by_seed=True`` ``{seed: {module: A0}}`` picked by each task's
    ``metadata['seed']`` (e.g. from :func:`peft_initial_lora_a`).
    Aggregate with :func:`~hydralib.analysis.core.aggregate`.
    """
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    modules = list(adapters.modules if modules is None else modules)
    meta = task_metadata(adapters, tasks)
    if by_seed:
        _require(meta, ("seed",), tasks)
    out = {}
    for module in modules:
        values = []
        for task, m in zip(tasks, meta):
            source = init_a[m["seed"]] if by_seed else init_a
            if module not in source:
                raise ValueError(f"hydralib.analysis.structure: no initial lora_a for module {module!r}"
                                 + (f" and seed {m['seed']}" if by_seed else ""))
            a, _, _ = adapters.factors(task, module)
            if tuple(a.shape) != tuple(source[module].shape):
                raise ValueError(
                    f"hydralib.analysis.structure: module {module!r}, task {task!r}: lora_a {tuple(a.shape)} "
                    f"but initial lora_a {tuple(source[module].shape)}"
                )
            values.append(init_distance(a, source[module]))
        out[module] = np.asarray(values, dtype=float)
    return out


def _target_shapes(model: torch.nn.Module, lora_config) -> dict[str, tuple[int, int]]:
    from peft.tuners.tuners_utils import check_target_module_exists

    from ..adapters import linear_shapes

    return {name: shape for name, shape in linear_shapes(model).items()
            if name and check_target_module_exists(lora_config, name)}


def _skeleton(shapes: Mapping[str, tuple[int, int]]) -> torch.nn.Module:
    """A module tree with uninitialised ``nn.Linear`` leaves at the given names, in the given order (no RNG use)."""
    root = torch.nn.Module()
    for name, (d_out, d_in) in shapes.items():
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        leaf = torch.nn.Linear(d_in, d_out, bias=False, device="meta").to_empty(device="cpu")
        parent.add_module(parts[-1], leaf)
    return root


def peft_initial_lora_a(model_or_shapes, lora_config, seed: int, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The lora_A that peft draws for ``seed``: ``{module: A0 (r, d_in)}``.

    Recomputed with peft itself: a skeleton with linear layers of the target
    shapes, in the base model's module order, gets ``lora_config`` injected right
    after ``torch.manual_seed(seed)`` (the caller's RNG state is restored).
    This reproduces the training run's initial A exactly when training called
    ``torch.manual_seed(seed)`` (or ``transformers.set_seed``) immediately before
    ``get_peft_model`` and the LoRA layers were built on CPU, which is the
    default. ``model_or_shapes``: the base model (only its target modules' shapes
    and order are used; it is not modified) or an ordered ``{module: (d_out, d_in)}``
    in the base model's ``named_modules`` order (order matters: each layer
    consumes random numbers).
    """
    from peft import inject_adapter_in_model

    config = copy.deepcopy(lora_config)
    if isinstance(model_or_shapes, torch.nn.Module):
        shapes = _target_shapes(model_or_shapes, config)
    else:
        shapes = dict(model_or_shapes)
    if not shapes:
        raise ValueError("hydralib.analysis.structure: no target modules of the LoRA config found in the model")
    if getattr(config, "fan_in_fan_out", False):
        config.fan_in_fan_out = False  # the skeleton uses nn.Linear; lora_A's shape (r, d_in) is the same
    skeleton = _skeleton(shapes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, skeleton, adapter_name=adapter_name)
    out = {}
    for name in shapes:
        layer = skeleton.get_submodule(name)
        out[name] = layer.lora_A[adapter_name].weight.detach().clone()
    return out


def seed_control(
    similarities: Mapping[str, np.ndarray],
    metadata: Sequence[Mapping],
    tasks: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Split similarity by seed and task: the initialisation control.

    ``similarities``: ``{name: (N, N)}``, e.g. ``{"a": A-side, "b": B-side}``.
    ``metadata``: needs ``seed``; the task identity is ``(application, language)``
    or ``task`` (see :func:`task_identity`). Returns for every name the cells
    ``{"same_seed" | "different_seed": {"same_task" | "different_task": {mean, std, n_pairs}}}``.
    If A-side similarity between different tasks is high with the same seed and
    drops to chance with different seeds, it came from the shared initial A.
    """
    masks = seed_masks(metadata)
    ident = [task_identity(m, tasks[i] if tasks is not None else str(i)) for i, m in enumerate(metadata)]
    same_task = np.array([[x == y for y in ident] for x in ident], dtype=bool)
    out = {}
    for name, sim in similarities.items():
        m = _square(sim, len(metadata), where=f"similarity {name!r}")
        out[name] = {
            seed_key: {
                "same_task": _stats(m, mask & same_task),
                "different_task": _stats(m, mask & ~same_task),
            }
            for seed_key, mask in masks.items()
        }
    return out


def adapter_seed_control(
    adapters,
    seeds: Sequence[int] | None = None,
    similarity=None,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    num_threads: int | None = 1,
) -> dict:
    """The initialisation control on adapter sets: A-side vs B-side similarity by same / different seed.

    ``adapters``: one adapter set whose tasks carry ``metadata['seed']``, or a
    list of sets (e.g. the zoo and its control sets), combined with
    :func:`~hydralib.analysis.core.combine_adapter_sets` (``seeds[k]`` for set k).
    ``similarity``: a precomputed result for the (combined) set.
    Returns ``{measure: {"overall": cells, "by_projection": {p: cells}}}`` for
    measure in cosine / overlap / cka (chance-corrected for overlap and cka),
    where ``cells = seed_control({"a": ..., "b": ...})`` of the module-averaged
    matrices. JSON-serialisable.
    """
    from .core import combine_adapter_sets
    from .similarity import adapter_similarity

    if isinstance(adapters, (list, tuple)):
        adapters = combine_adapter_sets(adapters, seeds=seeds)
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    meta = task_metadata(adapters, tasks)
    _require(meta, ("seed",), tasks)
    if similarity is None:
        kinds = [k for ka, kb, _ in _MEASURES.values() for k in (ka, kb)]
        kinds += ["chance_" + k for k in kinds if not k.startswith("cosine")]
        similarity = adapter_similarity(adapters, kinds, modules=modules, tasks=tasks, num_threads=num_threads)
    control = {}
    for measure, (ka, kb, corrected) in _MEASURES.items():
        entry = {}
        for key, group in (("overall", "all"), ("by_projection", "projection")):
            ma = similarity.mean_matrix(ka, by=group, corrected=corrected)
            mb = similarity.mean_matrix(kb, by=group, corrected=corrected)
            cells = {g: seed_control({"a": ma[g], "b": mb[g]}, meta, tasks) for g in ma}
            entry[key] = cells["all"] if key == "overall" else cells
        control[measure] = entry
    return to_jsonable(control)


# --------------------------------------------------------------------------- summary


_MEASURES = {  # measure -> (A-side kind, B-side kind, chance-corrected?)
    "cosine": ("cosine_a", "cosine_b", False),
    "overlap": ("overlap_a", "overlap_b", True),
    "cka": ("cka_a", "cka_b", True),
}


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
