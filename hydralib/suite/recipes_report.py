"""What the "When does sharing A work?" chapter shows: drift against sharing, own-task cost, computed verdicts.

Reads ``results/recipes.json`` (:func:`~hydralib.suite.recipes.recipe_results`). Every verdict that says one
recipe or setting is better rests on a paired-bootstrap interval excluding 0 (:mod:`hydralib.stats`).
"""

from __future__ import annotations

import math

PAPER_STORAGE = 0.52  # the paper's operating point: about half the storage of every adapter
TARGET = 0.98         # "nearly lossless": the paper's worst drop is 1.8 %


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def points(result: dict) -> list[dict]:
    """One dict per recipe and HydraOpt setting (and int4): drift, relative loss, bytes, relative performance + CI."""
    out = []
    for recipe, r in result["recipes"].items():
        for p in r["points"]:
            if p["name"] == "individual":
                continue
            s = r["stats"]["methods"][p["name"]]
            out.append({"recipe": recipe, "name": p["name"], "params": p["params"],
                        "drift": r["structure"]["drift_mean"], "relative_loss": p["relative_loss"],
                        "relative_bytes": p["relative_bytes"], "relative": s["relative"], "lo": s["ci"][0],
                        "hi": s["ci"][1]})
    return out


def own_quality(result: dict, reference: str = "standard") -> dict:
    """Per recipe: own-task exact match (mean, min over tasks) and its paired difference with ``reference``."""
    import numpy as np

    from ..stats import compare_means, hits_array

    ref = next(p for p in result["recipes"][reference]["points"] if p["name"] == "individual")
    out = {}
    for recipe, r in result["recipes"].items():
        own = next(p for p in r["points"] if p["name"] == "individual")
        per_task = [hits_array(v["hits"]).mean() for v in own["scores"].values()]
        out[recipe] = {"mean": float(np.mean(per_task)), "min": float(np.min(per_task)),
                       "min_task": list(own["scores"])[int(np.argmin(per_task))],
                       "versus_reference": None if recipe == reference else compare_means(own, ref)}
    return out


def verdicts(result: dict) -> dict:
    """Whether some recipe and HydraOpt setting reaches :data:`TARGET` within :data:`PAPER_STORAGE` of the bytes
    (by the point estimate, and by the lower end of the interval), the drift of the recipes that do, and each
    recipe's own-task cost."""
    pts = [p for p in points(result) if p["name"].startswith("hydraopt")]
    within = [p for p in pts if p["relative_bytes"] <= PAPER_STORAGE]
    reach = [p for p in within if _finite(p["relative"]) and p["relative"] >= TARGET]
    reach_ci = [p for p in within if _finite(p["lo"]) and p["lo"] >= TARGET]
    drift = {recipe: r["structure"]["drift_mean"] for recipe, r in result["recipes"].items()}
    best = {}
    for recipe in result["recipes"]:
        mine = [p for p in within if p["recipe"] == recipe and _finite(p["relative"])]
        best[recipe] = max(mine, key=lambda p: p["relative"]) if mine else None
    return {"reach": reach, "reach_ci": reach_ci, "drift": drift, "best_within": best,
            "own": own_quality(result) if "standard" in result["recipes"] else None}


def drift_bracket(v: dict) -> dict:
    """From :func:`verdicts`: the largest drift of a recipe that reaches the target, the smallest of one that does
    not, and whether drift alone orders them (every reaching recipe drifted less than every other)."""
    reached = {p["recipe"] for p in v["reach"]}
    yes = [d for k, d in v["drift"].items() if k in reached]
    no = [d for k, d in v["drift"].items() if k not in reached]
    return {"reach_max": max(yes) if yes else None, "fail_min": min(no) if no else None,
            "ordered": not yes or not no or max(yes) < min(no)}


def drift_sentence(v: dict) -> str:
    """The drift a recipe must keep to reach the target, as the measured recipes bracket it."""
    b = drift_bracket(v)
    listed = ", ".join(f"{k} {d:.3f}" for k, d in sorted(v["drift"].items(), key=lambda kv: kv[1]))
    if b["reach_max"] is None:
        return f"**The drift that needs:** no recipe measured reaches it (drift: {listed})."
    if b["fail_min"] is None:
        return (f"**The drift that needs:** every recipe measured reaches it, up to a drift of "
                f"{b['reach_max']:.3f} (drift: {listed}).")
    if not b["ordered"]:
        return (f"**The drift that needs:** drift alone does not separate the recipes that reach it from those that "
                f"do not (drift: {listed}).")
    return (f"**The drift that needs:** recipes whose lora_A moved at most {b['reach_max']:.3f} of its initial norm "
            f"reach it; those that moved {b['fail_min']:.3f} or more do not (drift: {listed}).")


def drift_figure(result: dict):
    """Relative loss (left) and relative performance with its 95 % interval (right) of every HydraOpt setting and
    int4 against each recipe's mean lora_A drift; one line per setting across recipes. Returns the figure."""
    import matplotlib.pyplot as plt

    pts = points(result)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = list(dict.fromkeys(p["name"] for p in pts))
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for name in names:
        mine = sorted((p for p in pts if p["name"] == name), key=lambda p: p["drift"])
        x = [p["drift"] for p in mine]
        style = dict(color=colors[name], marker="o" if name.startswith("hydraopt") else "s", ms=4, lw=1,
                     ls="-" if "task" in name else ":")
        ax1.plot(x, [p["relative_loss"] for p in mine], label=name, **style)
        ax2.errorbar(x, [p["relative"] for p in mine], capsize=2,
                     yerr=[[p["relative"] - p["lo"] for p in mine], [p["hi"] - p["relative"] for p in mine]], **style)
    for ax, label in ((ax1, "relative loss of the fit"), (ax2, "relative performance (95 % CI)")):
        ax.set_xlabel("mean lora_A drift from its initial value")
        ax.set_ylabel(label)
    ax1.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    return fig


def recipe_table(result: dict, default_lr: float) -> list[list]:
    """Rows (recipe, lr of lora_A, lr of lora_B, tasks, recorded training minutes) of the recipes (the optimisers
    are named in :data:`~hydralib.suite.training.RECIPES`; their dotted paths are too wide for a table)."""
    rows = []
    for name, r in result["recipes"].items():
        rec = r["recipe"]
        lr_a = "frozen" if rec.get("freeze_a") else f"{rec.get('lr_lora_A', default_lr):g}"
        rows.append([name, lr_a, f"{rec.get('lr_lora_B', default_lr):g}",
                     len(r["points"][0]["scores"]), f"{r['training_seconds'] / 60:.0f}"])
    return rows


def finding_lines(result: dict) -> list[str]:
    """The chapter's verdict sentences (Markdown), every number computed from ``result``."""
    v = verdicts(result)
    lines = []
    for recipe, st in ((k, r["structure"]) for k, r in result["recipes"].items()):
        b = v["best_within"][recipe]
        lines.append(
            f"**{recipe}**: lora_A moved {st['drift_mean']:.3f} of its initial norm on average (range "
            f"{st['drift_min']:.3f} to {st['drift_max']:.3f}); chance-corrected overlap between tasks is "
            f"{st['overlap_a']:.2f} for A and {st['overlap_b']:.2f} for B; the best HydraOpt setting within "
            f"{PAPER_STORAGE:.2f} of the bytes is "
            + (f"`{b['name']}` at {b['relative_bytes']:.3f}: relative loss {b['relative_loss']:.3f}, relative "
               f"performance {b['relative']:.3f} [{b['lo']:.3f}, {b['hi']:.3f}]." if b else "none."))
    if v["reach"]:
        names = ", ".join(f"`{p['recipe']}` / `{p['name']}`" for p in v["reach"])
        lines.append(f"**The paper's regime ({TARGET:.2f} at no more than {PAPER_STORAGE:.2f} of the bytes) is "
                     f"reached** by {names}"
                     + ("; by the lower end of the interval too, by "
                        + ", ".join(f"`{p['recipe']}` / `{p['name']}`" for p in v["reach_ci"]) if v["reach_ci"]
                        else "; no setting reaches it by the lower end of its interval") + ".")
        lines.append(drift_sentence(v))
    else:
        lines.append(f"**The paper's regime ({TARGET:.2f} at no more than {PAPER_STORAGE:.2f} of the bytes) is "
                     "not reached** under any recipe measured.")
    if v["own"]:
        for recipe, o in v["own"].items():
            c = o["versus_reference"]
            if c is None:
                lines.append(f"**Own-task quality, standard:** mean exact match {o['mean']:.3f} (lowest "
                             f"{o['min']:.2f}, `{o['min_task']}`).")
            else:
                lines.append(f"**Own-task quality, {recipe}:** mean exact match {o['mean']:.3f} (lowest {o['min']:.2f}, "
                             f"`{o['min_task']}`), {c['difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] "
                             f"against standard: {c['verdict']}.")
    return lines


def advice(result: dict) -> str:
    """One computed sentence for a user who plans to share A."""
    v = verdicts(result)
    if not v["reach"]:
        return ("No recipe measured here makes a shared A' nearly lossless at half the bytes; per-adapter "
                "compression (see the storage frontier) is the better use of the budget.")
    p = max(v["reach"], key=lambda p: (p["relative"], -p["relative_bytes"]))
    own = (v["own"] or {}).get(p["recipe"], {})
    cost = own.get("versus_reference")
    cost_text = (f"; its own-task exact match differs from standard training by {cost['difference']:+.3f} "
                 f"[{cost['ci'][0]:+.3f}, {cost['ci'][1]:+.3f}] ({cost['verdict']})") if cost else ""
    return (f"If you plan to share A, train with `{p['recipe']}` and one seed for every task: "
            f"`{p['name']}` then keeps {p['relative']:.3f} at {p['relative_bytes']:.3f} of the bytes{cost_text}.")
