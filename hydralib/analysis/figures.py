"""Figures of the asymmetry analysis, shared by the chapters and ``hydralib analyze``.

Each function draws on the Axes it is given and returns it (no ``show``).
Tasks are ordered by application, then language, when metadata has them.

Example
-------
>>> import matplotlib; matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> from hydralib.analysis import adapter_similarity
>>> from hydralib.analysis.synthetic import llama_module_shapes, task_grid, synthetic_adapters
>>> _, meta = task_grid(["qa", "reply"], ["en", "fr"])
>>> aset = synthetic_adapters(llama_module_shapes(2, 32, 16), meta, rank=4)
>>> fig, axes = plt.subplots(1, 2)
>>> similarity_pair(axes, adapter_similarity(aset), aset.metadata) is axes
True
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import plotting


def task_order(tasks: Sequence[str], metadata: Mapping[str, Mapping]) -> list[int]:
    """Indices of ``tasks`` sorted by (application, language, seed, name) where metadata has them."""
    def key(i):
        m = metadata.get(tasks[i], {})
        return (str(m.get("application", "")), str(m.get("language", "")), str(m.get("seed", "")), tasks[i])

    return sorted(range(len(tasks)), key=key)


def similarity_pair(axes, similarity, metadata: Mapping[str, Mapping], kind: str = "overlap",
                    corrected: bool = False, by_module: str | None = None):
    """A-side and B-side task x task heatmaps (module-averaged) on ``axes[0]`` and ``axes[1]``.

    ``kind``: ``"overlap"``, ``"cka"`` or ``"cosine"``; ``by_module``: average
    over one projection type only (e.g. ``"q_proj"``) instead of all modules.
    """
    tasks = list(similarity.tasks)
    order = task_order(tasks, metadata)
    labels = [tasks[i] for i in order]
    for ax, side in zip(axes, ("a", "b")):
        by = "all" if by_module is None else "projection"
        matrix = similarity.mean_matrix(f"{kind}_{side}", by=by, corrected=corrected)["all" if by_module is None else by_module]
        matrix = np.asarray(matrix)[np.ix_(order, order)]
        plotting.heatmap(ax, matrix, labels, vmin=0 if kind != "cosine" else -1, vmax=1,
                         title=f"{side.upper()} side: {kind}{' (chance-corrected)' if corrected else ''}")
        ax.tick_params(labelsize=6)
    return axes


def spectra_by_depth(ax, spectra, fields: Sequence[str] = ("shared_a_fraction", "shared_b_fraction"),
                     ylabel: str = "shared directions / stacked rank"):
    """Mean of spectra summary ``fields`` per layer (x = layer depth); returns ``ax``."""
    series = {}
    layers = None
    for field in fields:
        per_layer = spectra.aggregate(field, "layer")
        layers = list(per_layer)
        series[field] = [float(per_layer[k]) for k in layers]
    return plotting.curves(ax, series, x=layers, xlabel="layer", ylabel=ylabel)


def dendrogram(ax, clustering, labels: Sequence[str] | None = None, title: str | None = None):
    """scipy dendrogram of a :class:`~hydralib.analysis.structure.TaskClustering`; returns ``ax``."""
    import scipy.cluster.hierarchy as sch

    sch.dendrogram(clustering.linkage, labels=list(labels or clustering.tasks or []), ax=ax, orientation="right",
                   color_threshold=None, leaf_font_size=6)
    ax.set_xlabel("1 - similarity")
    if title:
        ax.set_title(title)
    return ax
