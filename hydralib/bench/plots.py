"""Plots of benchmark results; helpers take and return a matplotlib Axes and never call ``show``.

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> result = {"base": {"n_tasks": 4, "d_model": 8, "rank": 2}, "settings": {"methods": ["a"]},
...           "points": [{"method": "a", "status": "ok", "n_tasks": n, "d_model": 8, "rank": 2, "median_s": n / 10}
...                      for n in (2, 4, 8)]}
>>> fig, ax = plt.subplots()
>>> scaling_axes(ax, result, "n_tasks") is ax
True
"""

from __future__ import annotations

from .scaling import axis_series, slope

__all__ = ["AXIS_LABELS", "LABELS", "scaling_axes", "memory_axes"]

AXIS_LABELS = {"n_tasks": "number of adapters N", "d_model": "hidden size d", "rank": "LoRA rank r"}
LABELS = {"hydraopt-exact": "exact HydraOpt (factors)", "ta-dense": "dense baseline (dW + full SVD)"}


def scaling_axes(ax, result: dict, axis: str, metric: str = "median_s", *, ylabel: str | None = None,
                 title: str | None = None, legend: bool = True, annotate: bool = True):
    """Log-log curves of ``metric`` (``"median_s"`` or a memory key) along ``axis`` for every method; returns ``ax``.

    The fitted log-log slope is written at the end of each curve (``annotate``)
    and in its legend label. The x ticks are the grid's values.
    """
    import seaborn as sns
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    methods = result["settings"]["methods"]
    colors = sns.color_palette("colorblind", max(len(methods), 1))
    ticks: set = set()
    for method, color in zip(methods, colors):
        x, y = axis_series(result, axis, method, metric)
        keep = [(a, b) for a, b in zip(x, y) if b and b > 0]
        if not keep:
            continue
        x, y = [a for a, _ in keep], [b for _, b in keep]
        ticks.update(x)
        s = slope(x, y)
        label = LABELS.get(method, method) + ("" if s is None else f", slope {s:.2f}")
        ax.plot(x, y, marker="o", color=color, label=label)
        if annotate and s is not None:
            ax.annotate(f"{s:.2f}", (x[-1], y[-1]), xytext=(4, 0), textcoords="offset points", va="center",
                        color=color, fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(min(ticks) / 1.15, max(ticks) * 1.6)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(("seconds (median)" if metric == "median_s" else metric) if ylabel is None else ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize="small")
    return ax


def memory_axes(ax, result: dict, method: str = "hydraopt-task", *, title: str | None = None):
    """Peak resident memory (MiB) of ``method`` against the number of adapters N, adapters read eagerly
    (``load_adapters``) and lazily (``safe_open`` per module), from an out-of-core result; returns ``ax``.

    The adapters' own bytes on disk (N times one adapter's file) are drawn as a dashed line for scale.
    """
    import seaborn as sns

    from .outofcore import memory_series

    colors = dict(zip(("eager", "lazy"), sns.color_palette("colorblind", 2)))
    series = memory_series(result, method)
    labels = {"eager": "eager (load_adapters)", "lazy": "lazy (safe_open per module)"}
    for kind in ("eager", "lazy"):
        if kind in series:
            ax.plot(*series[kind], marker="o", color=colors[kind], label=labels[kind])
    ns = sorted({n for x, _ in series.values() for n in x})
    if ns:
        per_adapter = result["adapters"]["bytes"] / int(result["preset"]["n_tasks"]) / (1 << 20)
        ax.plot(ns, [n * per_adapter for n in ns], ls="--", color="0.5", label="the N adapters on disk")
        ax.set_xticks(ns)
    ax.set_xlabel("number of adapters N")
    ax.set_ylabel("peak resident memory (MiB)")
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax
