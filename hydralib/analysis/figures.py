"""Figures of the asymmetry analysis, shared by the chapters and ``hydralib analyze``.

Each function draws on the Axes it is given and returns it (no ``show``).
Tasks are ordered by application, then language, when metadata has them.

Example
-------
>>> import matplotlib; matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> from hydralib.analysis import adapter_similarity
>>> from hydralib.synthetic import attention_modules, task_grid, synthetic_adapters
>>> _, meta = task_grid(["qa", "reply"], ["en", "fr"])
>>> aset = synthetic_adapters(attention_modules(2, 32, 16), meta, rank=4)
>>> fig, axes = plt.subplots(1, 2)
>>> similarity_pair(axes, adapter_similarity(aset), aset.metadata) is axes
True
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import plotting
from .core import _quiet_nan_warnings


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


def task_labels(tasks: Sequence[str], metadata: Mapping[str, Mapping], seed: bool = False) -> list[str]:
    """Short tick labels ``"<app>-<language>"`` (first 4 letters of the application; ``"/s<seed>"`` if ``seed``).

    Tasks without application/language metadata keep their name.

    >>> task_labels(["qa-en"], {"qa-en": {"application": "question_answering", "language": "en", "seed": 1}}, seed=True)
    ['ques-en/s1']
    """
    out = []
    for t in tasks:
        m = metadata.get(t, {})
        if "application" in m and "language" in m:
            label = f"{str(m['application'])[:4]}-{m['language']}"
            if seed and "seed" in m:
                label += f"/s{m['seed']}"
        else:
            label = str(t)
        out.append(label)
    return out


def ordered_tasks(tasks: Sequence[str], metadata: Mapping[str, Mapping],
                  keys: Sequence[str] = ("application", "language", "seed")) -> list[int]:
    """Indices of ``tasks`` sorted by the metadata ``keys`` in turn (missing keys sort first), then by name.

    ``keys=("seed", "application", "language")`` puts the tasks of one seed together.

    >>> meta = {"x": {"seed": 1, "application": "a"}, "y": {"seed": 0, "application": "b"}}
    >>> ordered_tasks(["x", "y"], meta), ordered_tasks(["x", "y"], meta, keys=("seed",))
    ([0, 1], [1, 0])
    """
    def key(i):
        m = metadata.get(tasks[i], {})
        return tuple(str(m.get(k, "")) for k in keys) + (str(tasks[i]),)

    return sorted(range(len(tasks)), key=key)


def similarity_heatmaps(axes, matrices: Sequence, tasks: Sequence[str], metadata: Mapping[str, Mapping],
                        titles: Sequence[str], keys: Sequence[str] = ("application", "language", "seed"),
                        block: str | None = "application", vmin: float | None = None, vmax: float | None = None,
                        diagonal: bool = False, seed_labels: bool = False, cbar_label: str | None = None):
    """Task x task heatmaps side by side (e.g. the A side next to the B side), rows and columns in one order.

    ``matrices``: one ``(N, N)`` array per Axes, rows following ``tasks``;
    ``keys``: metadata keys that order the tasks (see :func:`ordered_tasks`);
    ``block``: a metadata key whose changes along that order are marked by thin
    white lines (``None``: no lines); ``diagonal=False`` leaves each task's
    similarity with itself blank. ``vmin``/``vmax`` default to the smallest and
    largest value shown in any of the panels, so that all panels share one
    colour scale. Returns ``axes``.
    """
    order = ordered_tasks(tasks, metadata, keys)
    labels = task_labels([tasks[i] for i in order], metadata, seed=seed_labels)
    edges = []
    if block is not None:
        values = [str(metadata.get(tasks[i], {}).get(block, "")) for i in order]
        edges = [k for k in range(1, len(values)) if values[k] != values[k - 1]]
    shown = []
    for matrix in matrices:
        m = np.array(matrix, dtype=float)[np.ix_(order, order)]
        if not diagonal:
            np.fill_diagonal(m, np.nan)
        shown.append(m)
    finite = np.concatenate([m[np.isfinite(m)] for m in shown])
    vmin = float(finite.min()) if vmin is None and finite.size else vmin
    vmax = float(finite.max()) if vmax is None and finite.size else vmax
    for ax, m, title in zip(axes, shown, titles):
        plotting.heatmap(ax, m, labels, vmin=vmin, vmax=vmax, title=title, cbar_label=cbar_label)
        ax.grid(False)  # no grid lines through the blank diagonal
        for k in edges:
            ax.axhline(k, color="white", linewidth=0.8)
            ax.axvline(k, color="white", linewidth=0.8)
        ax.tick_params(labelsize=5 if len(tasks) > 24 else 7)
    return axes


def spectra_by_layer(axes, spectra, sides: Sequence[str] = ("a", "b", "delta"), normalise: bool = True,
                     cmap: str = "viridis"):
    """Per-task singular values by layer depth: one curve per layer, coloured from shallow to deep.

    Each Axes shows one of ``sides``: ``"a"`` (singular values of A_i), ``"b"`` (B_i)
    or ``"delta"`` (dW_i), averaged over the tasks and the modules of each layer;
    with ``normalise`` each task's values are divided by its largest first
    (``sigma_k / sigma_1``). ``spectra``: a
    :class:`~hydralib.analysis.spectra.SpectraResult`. Returns ``axes``.
    """
    import matplotlib as mpl

    from .core import aggregate

    titles = {"a": "$A_i$", "b": "$B_i$", "delta": r"$\Delta W_i$"}
    for ax, side in zip(axes, sides):
        values = {}
        for name, m in spectra.modules.items():
            s = np.asarray(getattr(m, side), dtype=float)
            if normalise:
                with np.errstate(invalid="ignore", divide="ignore"):
                    s = s / s[:, :1]
            with np.errstate(invalid="ignore"), _quiet_nan_warnings():
                values[name] = np.nanmean(s, axis=0)
        per_layer = aggregate(values, by="layer")
        layers = [k for k in per_layer if k is not None]
        norm = mpl.colors.Normalize(vmin=min(layers), vmax=max(max(layers), min(layers) + 1))
        colours = mpl.colormaps[cmap]
        for layer in layers:
            curve = np.asarray(per_layer[layer])
            ax.plot(np.arange(1, curve.size + 1), curve, color=colours(norm(layer)), linewidth=1)
        ax.set_title(titles.get(side, side))
        ax.set_xlabel("index k")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    bar = axes[-1].figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=colours), ax=list(axes), label="layer")
    bar.locator = mpl.ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    axes[0].set_ylabel(r"$\sigma_k / \sigma_1$" if normalise else r"$\sigma_k$")
    return axes


def energy_curves(ax, spectra, side: str, by: str = "projection", q: float | None = None,
                  title: str | None = None):
    """Energy curves of the stacked factors, averaged over the modules of each group.

    ``side``: ``"a"`` (``[A_1; ...; A_N]``), ``"b"`` (``[B_1 ... B_N]``) or ``"delta"``
    (each dW_i, averaged over tasks); ``by``: ``"projection"`` or ``"layer"``;
    ``q``: a dashed reference line (e.g. 0.9). The x axis is the number of
    directions k (log scale when a curve has more than 16 points). Returns ``ax``.
    """
    import matplotlib as mpl

    curves = spectra.aggregate(f"energy_{side}", by=by)
    series = {str(k): np.asarray(v, dtype=float) for k, v in curves.items()}
    plotting.curves(ax, series, xlabel="directions k", ylabel="energy captured",
                    title=title, hline=q, hline_label=None if q is None else f"q = {q:g}")
    if max(len(v) for v in series.values()) > 16:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mpl.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    return ax


def angle_profiles(ax, similarity, side: str, masks: Mapping[str, np.ndarray], title: str | None = None):
    """Mean cosine of the k-th principal angle, k = 1..r, over the task pairs of each mask.

    ``similarity``: a :class:`~hydralib.analysis.similarity.SimilarityResult`
    computed with ``angles_a`` / ``angles_b``; ``side``: ``"a"`` or ``"b"``;
    ``masks``: ``{label: (N, N) bool}`` selecting task pairs (e.g. same seed,
    different seed). Cosines are averaged over modules, then over the pairs.
    1 means the k-th direction is shared exactly, 0 that it is orthogonal.
    Returns ``ax``.
    """
    import matplotlib as mpl

    cosines = [np.cos(a) for a in similarity.kind(f"angles_{side}").values()]
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        mean = np.nanmean(np.stack(cosines), axis=0)  # (N, N, r)
        series = {label: np.nanmean(mean[np.asarray(mask, dtype=bool)], axis=0) for label, mask in masks.items()
                  if np.asarray(mask).any()}
    plotting.curves(ax, series, xlabel="principal angle k", ylabel=r"mean $\cos\theta_k$", title=title)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    return ax


def seed_control_heatmaps(axes, similarity, adapters, kind: str = "overlap"):
    """The initialisation control as two heatmaps (A side, B side): chance-corrected ``kind`` (``overlap`` or
    ``cka``), module-averaged, between every adapter of the tasks trained with more than one seed.

    ``similarity``: a :class:`~hydralib.analysis.similarity.SimilarityResult` of ``adapters`` (an adapter set
    whose metadata has ``seed``, ``task``, ``application``, ``language``, e.g. the zoo combined with its
    seed-control sets). Ordered by seed (white lines), then application and language; labels end in
    ``/s<seed>``. Returns ``axes``.
    """
    meta = [adapters.metadata[t] for t in adapters.tasks]
    seeds_of: dict = {}
    for m, t in zip(meta, adapters.tasks):
        seeds_of.setdefault(m.get("task", t), set()).add(m.get("seed"))
    shown = [k for k, (m, t) in enumerate(zip(meta, adapters.tasks)) if len(seeds_of[m.get("task", t)]) > 1]
    if not shown:
        raise ValueError("seed_control_heatmaps: no task was trained with more than one seed")
    label = {"overlap": "subspace overlap", "cka": "CKA"}[kind]
    matrices = [similarity.mean_matrix(f"{kind}_{side}", corrected=True)["all"][np.ix_(shown, shown)]
                for side in ("a", "b")]
    return similarity_heatmaps(axes, matrices, [adapters.tasks[k] for k in shown], adapters.metadata,
                               titles=[f"A side: {label}", f"B side: {label}"],
                               keys=("seed", "application", "language"), block="seed", seed_labels=True, vmin=0)
