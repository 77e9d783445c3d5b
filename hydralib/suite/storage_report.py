"""What the storage-frontier chapter shows: points with intervals, the Pareto front, budgets, verdicts, the figure.

Every number comes from ``results/storage-frontier.json``
(:func:`~hydralib.suite.storage_frontier.storage_frontier_results`); every verdict
that says "better" rests on the paired-bootstrap interval of a difference
(:func:`hydralib.stats.compare_rows`) excluding 0.
"""

from __future__ import annotations

import math
from typing import Sequence

FAMILIES = {  # family -> (legend label, colour, marker)
    "individual": ("every adapter (fp16)", "black", "*"),
    "merge": ("one merged adapter", "tab:gray", "v"),
    "hydraopt": ("HydraOpt (shared A', K heads)", "tab:red", "o"),
    "hydraopt+q": ("HydraOpt, quantized", "darkred", "P"),
    "truncate": ("rank truncation", "tab:blue", "s"),
    "truncate+q": ("truncation + int4", "navy", "X"),
    "quantize": ("quantization", "tab:green", "D"),
    "compeft": ("ComPEFT", "tab:purple", "^"),
    "jd": ("Compress then Serve", "tab:orange", "h"),
}
BUDGETS = (0.5, 0.25, 0.1, 0.05, 0.025)


def family(row: dict) -> str:
    """The plotting family of a row (compositions apart from their base family)."""
    if row["family"] in ("hydraopt", "truncate") and row["params"].get("codec"):
        return f"{row['family']}+q"
    return row["family"]


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def points(result: dict) -> list[dict]:
    """One dict a row: name, family, relative bytes, relative performance and its interval, exact match,
    graded score relative to the adapters', relative loss."""
    stats = result["stats"]["methods"]
    out = []
    for row in result["rows"]:
        s = stats[row["name"]]
        out.append({"name": row["name"], "family": family(row), "bytes": row["bytes"],
                    "relative_bytes": row["relative_bytes"], "relative": s["relative"], "lo": s["ci"][0],
                    "hi": s["ci"][1], "exact_match": s["exact_match"], "graded_relative": s["graded_relative"],
                    "relative_loss": row["relative_loss"]})
    return out


def pareto(pts: Sequence[dict]) -> list[int]:
    """Indices of the points on the front of (relative bytes, relative performance) (point estimates)."""
    from .frontier import pareto_front

    idx = [i for i, p in enumerate(pts) if finite(p["relative"])]
    front = pareto_front([(pts[i]["relative_bytes"], pts[i]["relative"]) for i in idx])
    return [idx[j] for j in front]


def _row(result, name):
    return next(r for r in result["rows"] if r["name"] == name)


def best_within(pts: Sequence[dict], budget: float, families: Sequence[str] | None = None) -> dict | None:
    """The point of highest relative performance with at most ``budget`` relative bytes (among ``families``)."""
    pool = [p for p in pts if p["relative_bytes"] <= budget and finite(p["relative"])
            and (families is None or p["family"] in families) and p["family"] != "individual"]
    return max(pool, key=lambda p: (p["relative"], -p["relative_bytes"])) if pool else None


def budget_table(result: dict, budgets: Sequence[float] = BUDGETS) -> list[dict]:
    """Per budget: the best point within it, the best HydraOpt point within it, and their paired difference."""
    from ..stats import compare_rows

    pts = points(result)
    ref = _row(result, "individual")
    out = []
    for b in budgets:
        best = best_within(pts, b)
        hydra = best_within(pts, b, ("hydraopt", "hydraopt+q"))
        cmp = None
        if best and hydra and best["name"] != hydra["name"]:
            cmp = compare_rows(_row(result, best["name"]), _row(result, hydra["name"]), ref,
                               B=result["stats"]["B"], seed=result["stats"]["seed"])
        out.append({"budget": b, "best": best, "hydraopt": hydra, "comparison": cmp})
    return out


def compare(result: dict, a: str, b: str) -> dict:
    """Paired difference of relative performance of rows ``a`` and ``b`` (interval and verdict)."""
    from ..stats import compare_rows

    return compare_rows(_row(result, a), _row(result, b), _row(result, "individual"),
                        B=result["stats"]["B"], seed=result["stats"]["seed"])


def verdicts(result: dict, target: float = 0.98) -> dict:
    """The chapter's computed verdicts.

    ``hydraopt_on_front``: HydraOpt points (quantized or not) on the Pareto front; ``smallest_at_target``: the
    point of fewest bytes whose relative performance (point estimate) is at least ``target``, and
    ``smallest_at_target_ci``: the same by the lower end of its interval; ``compose``: each quantized HydraOpt
    point against its fp16 original (paired difference); ``dominates_hydraopt``: for each HydraOpt point,
    a point with fewer bytes that is better by its interval, if any.
    """
    pts = points(result)
    front = pareto(pts)
    hydra = [p for p in pts if p["family"] in ("hydraopt", "hydraopt+q")]
    at_target = [p for p in pts if finite(p["relative"]) and p["relative"] >= target]
    at_target_ci = [p for p in pts if finite(p["lo"]) and p["lo"] >= target]
    compose = {}
    for row in result["rows"]:
        if row["family"] == "hydraopt" and row["params"].get("codec"):
            base = next((r for r in result["rows"] if r["family"] == "hydraopt" and not r["params"].get("codec")
                         and r["params"]["heads"] == row["params"]["heads"]
                         and r["params"]["rank"] == row["params"]["rank"]), None)
            if base:
                compose[row["name"]] = {"base": base["name"], **compare(result, row["name"], base["name"]),
                                        "bytes_ratio": row["bytes"] / base["bytes"]}
    dominated = {}
    for h in hydra:
        rivals = sorted((p for p in pts if p["relative_bytes"] <= h["relative_bytes"] and p["name"] != h["name"]
                         and p["family"] not in ("hydraopt", "hydraopt+q", "individual")),
                        key=lambda p: -p["relative"] if finite(p["relative"]) else 0)
        for p in rivals:
            c = compare(result, p["name"], h["name"])
            if c["verdict"] == "better":
                dominated[h["name"]] = {"by": p["name"], **c}
                break
    return {"front": [pts[i]["name"] for i in front],
            "hydraopt_on_front": [pts[i]["name"] for i in front if pts[i]["family"] in ("hydraopt", "hydraopt+q")],
            "smallest_at_target": min(at_target, key=lambda p: p["relative_bytes"]) if at_target else None,
            "smallest_at_target_ci": min(at_target_ci, key=lambda p: p["relative_bytes"]) if at_target_ci else None,
            "target": target, "compose": compose, "dominates_hydraopt": dominated}


def grid_matrix(result: dict, key: str = "relative_loss"):
    """HydraOpt's ablation grid as ``(heads list, ranks list, matrix[heads][ranks])`` of ``key`` (NaN where absent)."""
    import numpy as np

    grid = result["hydraopt_grid"]
    heads = sorted({g["heads"] for g in grid})
    ranks = sorted({g["rank"] for g in grid})
    m = np.full((len(heads), len(ranks)), np.nan)
    for g in grid:
        m[heads.index(g["heads"]), ranks.index(g["rank"])] = g[key] if g[key] is not None else np.nan
    return heads, ranks, m


def frontier_axes(ax, result: dict, annotate: Sequence[str] = ()):
    """Relative performance (with 95 % intervals) against relative bytes on a log axis, one colour and marker
    per family, the Pareto front as a step line. Returns ``ax``."""
    pts = points(result)
    seen = set()
    for p in pts:
        if not finite(p["relative"]):
            continue
        label, colour, marker = FAMILIES[p["family"]]
        ax.errorbar(p["relative_bytes"], p["relative"], yerr=[[p["relative"] - p["lo"]], [p["hi"] - p["relative"]]],
                    fmt=marker, color=colour, ms=7, capsize=2, lw=1,
                    label=None if p["family"] in seen else label)
        seen.add(p["family"])
        if p["name"] in annotate:
            ax.annotate(p["name"], (p["relative_bytes"], p["relative"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
    front = [pts[i] for i in pareto(pts)]
    if front:
        ax.step([p["relative_bytes"] for p in front], [p["relative"] for p in front], where="post",
                color="0.4", lw=0.8, ls="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("bytes, relative to every adapter's fp16 file (log)")
    ax.set_ylabel("relative performance (95 % CI)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    return ax


def fmt_ci(p: dict | None) -> str:
    """``"0.981 [0.970, 0.990]"``, or ``"n/a"``."""
    if not p or not finite(p["relative"]):
        return "n/a"
    return f"{p['relative']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"


def _name(p: dict | None) -> str:
    return f"`{p['name']}`" if p else "none"


def finding_lines(result: dict) -> list[str]:
    """The chapter's findings as Markdown sentences, every number computed from ``result`` (no hand-typed value)."""
    pts = {p["name"]: p for p in points(result)}
    v = verdicts(result)
    lines = []
    q = [pts[n] for n in ("int8", "int4", "int3", "int2") if n in pts]
    if q:
        lines.append("**Quantizing each adapter** keeps " + "; ".join(
            f"{fmt_ci(p)} at {p['relative_bytes']:.3f} of the bytes ({p['name']})" for p in q) + ".")
    small = v["smallest_at_target"]
    small_ci = v["smallest_at_target_ci"]
    lines.append(
        f"**The smallest budget that keeps {v['target']:.2f}** of the adapters' performance is "
        + (f"{small['relative_bytes']:.3f} of the bytes ({_name(small)}, {fmt_ci(small)})" if small else "not reached")
        + "; by the lower end of the interval, "
        + (f"{small_ci['relative_bytes']:.3f} ({_name(small_ci)})." if small_ci else "no point reaches it."))
    hf = v["hydraopt_on_front"]
    lines.append("**HydraOpt on the Pareto front:** " + (", ".join(f"`{n}`" for n in hf) if hf else "nowhere")
                 + f" (the front: {', '.join(f'`{n}`' for n in v['front'])}).")
    dom = v["dominates_hydraopt"]
    hydra_names = [n for n, p in pts.items() if p["family"] in ("hydraopt", "hydraopt+q")]
    if hydra_names:
        lines.append(f"**Beaten with fewer bytes:** {len(dom)} of the {len(hydra_names)} HydraOpt points have a "
                     "point of another family at no more bytes that is better by the interval of the paired "
                     "difference" + (" (" + "; ".join(f"`{h}` by `{d['by']}`, +{d['difference']:.3f} "
                                                       f"[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"
                                                       for h, d in dom.items()) + ")" if dom else "") + ".")
    for name, c in v["compose"].items():
        verdict = {"worse": "worse (the interval excludes 0)", "better": "better (the interval excludes 0)",
                   "within noise": "within noise"}[c["verdict"]]
        lines.append(f"**Quantizing HydraOpt's factors:** `{name}` stores {c['bytes_ratio']:.2f} of the bytes of "
                     f"`{c['base']}`, and its relative performance changes by {c['difference']:+.3f} "
                     f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]: {verdict}.")
    return lines
