"""Which tasks share a head: groupings by task, by metadata, explicit, or by clustering the tasks' updates.

A :class:`Grouping` names the K heads and maps every task to one;
:func:`resolve_groups` turns the ``heads`` argument of
:func:`~hydralib.merge.hydraopt.hydraopt` into one. Clustering
(:func:`group_by_clustering`) cuts a hierarchical clustering of
:func:`task_similarity`, the cosine similarity of the tasks' whole updates,
computed on the factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..lowrank import delta_inner_products
from .problem import _as_adapter_set, _module_factors

__all__ = [
    "Grouping",
    "group_by_task",
    "group_by_metadata",
    "group_explicit",
    "group_by_clustering",
    "task_similarity",
    "resolve_groups",
]


@dataclass(frozen=True)
class Grouping:
    """Heads and the task -> head assignment. ``head_names`` in order of first use by ``tasks``."""

    head_names: list[str]
    task_to_head: dict[str, str]
    how: str

    def index(self, tasks: Sequence[str]) -> list[int]:
        """``group_index[i]`` = position of task i's head in ``head_names``."""
        pos = {h: k for k, h in enumerate(self.head_names)}
        return [pos[self.task_to_head[t]] for t in tasks]

    @property
    def n_heads(self) -> int:
        return len(self.head_names)


def _grouping_from_labels(tasks: Sequence[str], labels: Sequence[Any], how: str) -> Grouping:
    names = [str(x) for x in labels]
    return Grouping(list(dict.fromkeys(names)), dict(zip(tasks, names)), how)


def group_by_task(tasks: Sequence[str]) -> Grouping:
    """One head per task (K = N); heads are named after the tasks."""
    return _grouping_from_labels(tasks, tasks, "task")


def group_by_metadata(tasks: Sequence[str], metadata: Mapping[str, Mapping], key: str) -> Grouping:
    """One head per distinct ``metadata[task][key]`` (e.g. ``"application"``, ``"language"``)."""
    missing = [t for t in tasks if key not in metadata.get(t, {})]
    if missing:
        raise ValueError(f"heads={key!r}: tasks {missing[:5]} have no {key!r} in their metadata")
    return _grouping_from_labels(tasks, [metadata[t][key] for t in tasks], key)


def group_explicit(tasks: Sequence[str], mapping: Mapping[str, Any]) -> Grouping:
    """Heads from an explicit ``{task: head name}`` mapping that covers every task."""
    missing = [t for t in tasks if t not in mapping]
    if missing:
        raise ValueError(f"heads mapping: no head for tasks {missing[:5]}")
    extra = [t for t in mapping if t not in set(tasks)]
    if extra:
        raise ValueError(f"heads mapping: unknown tasks {extra[:5]}")
    return _grouping_from_labels(tasks, [mapping[t] for t in tasks], "explicit")


def task_similarity(adapters, modules: Sequence[str] | None = None) -> torch.Tensor:
    """Cosine similarity of the tasks' whole updates, ``(N, N)`` float64, in factored form.

    ``cos(i, j) = sum_m <dW_i, dW_j>_m / sqrt(sum_m ||dW_i||_m^2 sum_m ||dW_j||_m^2)``
    over ``modules`` (default all), each inner product a trace of ``r x r`` Grams.
    """
    aset = _as_adapter_set(adapters)
    modules = list(modules) if modules is not None else aset.modules
    total = torch.zeros(len(aset.tasks), len(aset.tasks), dtype=torch.float64)
    for module in modules:
        As, Bs, ss = _module_factors(aset, module)
        total += delta_inner_products(As, Bs, ss).cpu()
    norms = total.diagonal().clamp_min(1e-300).sqrt()
    return total / norms[:, None] / norms[None, :]


def group_by_clustering(
    tasks: Sequence[str],
    similarity: torch.Tensor | np.ndarray,
    n_heads: int,
    method: str = "average",
) -> Grouping:
    """``n_heads`` heads by hierarchical clustering of the tasks (``scipy.cluster.hierarchy``).

    Distance ``1 - similarity`` (e.g. :func:`task_similarity`), ``method``
    linkage (default average), cut into exactly ``n_heads`` clusters with
    ``cut_tree``. Heads are named ``cluster0``, ``cluster1``... in order of
    their first task.
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    n = len(tasks)
    if not 1 <= int(n_heads) <= n:
        raise ValueError(f"heads={n_heads}: need 1 <= K <= number of tasks ({n})")
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.shape != (n, n):
        raise ValueError(f"similarity {sim.shape} does not match {n} tasks")
    if n == 1:
        return _grouping_from_labels(tasks, ["cluster0"], f"clustering:{method}")
    dist = np.clip(1.0 - (sim + sim.T) / 2, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    Z = linkage(squareform(dist, checks=False), method=method)
    raw = cut_tree(Z, n_clusters=int(n_heads)).ravel()
    order = {c: k for k, c in enumerate(dict.fromkeys(raw.tolist()))}
    return _grouping_from_labels(tasks, [f"cluster{order[c]}" for c in raw.tolist()], f"clustering:{method}")


def resolve_groups(heads, adapters, modules: Sequence[str] | None = None, cluster_method: str = "average") -> Grouping:
    """Turn the ``heads`` argument of :func:`hydraopt` into a :class:`Grouping`.

    ``"task"`` (K = N); any other string: a metadata key (``"application"``,
    ``"language"``); an int K: hierarchical clustering on :func:`task_similarity`;
    a mapping task -> head; a :class:`Grouping` as is.
    """
    aset = _as_adapter_set(adapters)
    tasks = aset.tasks
    if isinstance(heads, Grouping):
        group_explicit(tasks, heads.task_to_head)
        return heads
    if isinstance(heads, str):
        if heads == "task":
            return group_by_task(tasks)
        return group_by_metadata(tasks, aset.metadata, heads)
    if isinstance(heads, Mapping):
        return group_explicit(tasks, heads)
    if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        if int(heads) == len(tasks):
            return _grouping_from_labels(tasks, [f"cluster{i}" for i in range(len(tasks))], f"clustering:{cluster_method}")
        if int(heads) == 1:
            return _grouping_from_labels(tasks, ["cluster0"] * len(tasks), f"clustering:{cluster_method}")
        return group_by_clustering(tasks, task_similarity(aset, modules), int(heads), cluster_method)
    raise TypeError(f"heads must be 'task', a metadata key, an int K or a task -> head mapping, got {heads!r}")
