"""Metadata groups and clustering of task x task similarity matrices ``(N, N)``.

:func:`group_similarity` averages the pairs of tasks in the same application
(different language), the same language (different application), the same
task (replicates, e.g. other seeds) and unrelated pairs; :func:`cluster_tasks`
clusters the tasks hierarchically on ``1 - similarity`` and
:func:`cluster_agreement` scores clusters against application / language with
the adjusted Rand index. (Part of :mod:`hydralib.analysis.structure`, which
re-exports every name here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import scipy.cluster.hierarchy as sch
import scipy.spatial.distance as ssd

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
