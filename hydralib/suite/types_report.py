"""What the "Other adapter types" chapter shows: VeRA, DoRA and AdaLoRA beside LoRA, on the same tasks and examples.

Reads ``results/adapter_types.json`` (:func:`~hydralib.suite.adapter_types_measure.type_results`) and, for
LoRA, the ``standard`` recipe of ``results/recipes.json`` (the zoo's own LoRAs of the same tasks, scored on
the same test examples). Every verdict that says one thing is better than another rests on a paired
bootstrap interval that excludes 0 (:mod:`hydralib.stats`).
"""

from __future__ import annotations

import math

LABELS = {"lora": "LoRA", "vera": "VeRA", "dora": "DoRA", "adalora": "AdaLoRA"}
#: What each type shares in HydraOpt's two sides (VeRA: its vectors; the projections are shared anyway).
SIDE_NAMES = {"vera": ("λ_d", "λ_b")}
TARGET = 0.98  # "nearly lossless", the paper's bar (its worst drop is 1.8 %)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def entries(types_result: dict, recipes_result: dict | None = None) -> dict[str, dict]:
    """``{kind: {"structure", "points", "stats"}}``: LoRA first (from the recipes' ``standard``), then each type."""
    out = {}
    if recipes_result and "standard" in recipes_result.get("recipes", {}):
        out["lora"] = recipes_result["recipes"]["standard"]
    out.update(types_result["types"])
    return out


def points(types_result: dict, recipes_result: dict | None = None) -> list[dict]:
    """One dict per type and point: bytes and loss relative to the type's own adapters, relative performance + CI."""
    rows = []
    for kind, e in entries(types_result, recipes_result).items():
        for p in e["points"]:
            s = e["stats"]["methods"][p["name"]]
            rows.append({"kind": kind, "name": p["name"], "bytes": p["bytes"], "relative_bytes": p["relative_bytes"],
                         "relative_loss": p["relative_loss"], "loss_space": p.get("loss_space", "dW"),
                         "relative": s["relative"], "lo": s["ci"][0], "hi": s["ci"][1],
                         "exact_match": s["exact_match"]})
    return rows


def own_quality(types_result: dict, recipes_result: dict | None = None) -> dict:
    """Per type: own-task exact match (mean, lowest task) and, beside LoRA's, the paired difference (type - LoRA)."""
    import numpy as np

    from ..stats import compare_means, hits_array

    es = entries(types_result, recipes_result)
    own = {k: next(p for p in e["points"] if p["name"] == "individual") for k, e in es.items()}
    out = {}
    for kind, row in own.items():
        per_task = [hits_array(v["hits"]).mean() for v in row["scores"].values()]
        out[kind] = {"mean": float(np.mean(per_task)), "min": float(np.min(per_task)),
                     "min_task": list(row["scores"])[int(np.argmin(per_task))],
                     "versus_lora": compare_means(row, own["lora"]) if kind != "lora" and "lora" in own else None}
    return out


def side_pair(kind: str, rank: int) -> tuple[str, str]:
    """The two points of the side comparison, one head per task: (sharing A, sharing B); for VeRA (sharing λ_d, the
    input side, sharing λ_b)."""
    if kind == "vera":
        from .adapter_types_vera import SIDE_PAIR

        return SIDE_PAIR
    return f"hydraopt-task-r{rank}", f"hydraopt-task-r{rank}-sideB"


def side_verdicts(types_result: dict, rank: int) -> dict:
    """Per type: HydraOpt with one head per task (at r' = ``rank``), sharing A against sharing B (paired difference
    of relative performance, A - B, against the type's own adapters), with each side's similarity between tasks
    (chance-corrected subspace overlap; VeRA: mean cosine of λ_d's movement from its start and of λ_b)."""
    from ..stats import compare_rows

    out = {}
    for kind, e in types_result["types"].items():
        rows = {p["name"]: p for p in e["points"]}
        a, b = (rows.get(name) for name in side_pair(kind, rank))
        if a is None or b is None:
            continue
        c = compare_rows(a, b, rows["individual"])
        st = e["structure"]
        similar = (st["cos_d_moved"], st["cos_b"]) if kind == "vera" else (st["overlap_a"], st["overlap_b"])
        out[kind] = {**c, "loss_a": a["relative_loss"], "loss_b": b["relative_loss"], "similar_a": similar[0],
                     "similar_b": similar[1], "point_a": a["name"], "point_b": b["name"]}
    return out


def cheapest(types_result: dict, recipes_result: dict | None = None, target: float = TARGET) -> dict:
    """Per type: the point with the fewest bytes whose relative performance reaches ``target`` by the lower end of
    its interval (``"ci"``), and by its point estimate (``"point"``); None where no point does."""
    out = {}
    for kind in entries(types_result, recipes_result):
        mine = [p for p in points(types_result, recipes_result) if p["kind"] == kind and p["name"] != "individual"]
        by_ci = [p for p in mine if _finite(p["lo"]) and p["lo"] >= target]
        by_point = [p for p in mine if _finite(p["relative"]) and p["relative"] >= target]
        out[kind] = {"ci": min(by_ci, key=lambda p: p["relative_bytes"]) if by_ci else None,
                     "point": min(by_point, key=lambda p: p["relative_bytes"]) if by_point else None}
    return out


def fmt_short(p: dict | None) -> str:
    return "none" if p is None else f"`{p['name']}` at {p['relative_bytes']:.3f} of its bytes ({p['relative']:.3f})"


def finding_lines(types_result: dict, recipes_result: dict | None, rank: int, file_mb: dict) -> list[str]:
    """The chapter's findings, one Markdown bullet each, computed from the results (``file_mb``: MB per adapter)."""
    own = own_quality(types_result, recipes_result)
    sides = side_verdicts(types_result, rank)
    cheap = cheapest(types_result, recipes_result)
    lines = []
    quality = []
    for kind, q in own.items():
        text = f"{LABELS[kind]} {q['mean']:.3f} (lowest {q['min']:.2f}, `{q['min_task']}`)"
        v = q["versus_lora"]
        if v is not None:
            word = {"better": "better than LoRA", "worse": "worse than LoRA"}.get(v["verdict"], "within noise of LoRA")
            text += f", {v['difference']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]: {word}"
        quality.append(text)
    lines.append("**Own-task exact match** on the same tasks and test examples: " + "; ".join(quality) + ".")
    lines.append("**Storage per adapter** (fp16 files): " + ", ".join(
        f"{LABELS[k]} {mb:.2f} MB" for k, mb in file_mb.items()) + ".")
    for kind, s in sides.items():
        a, b = SIDE_NAMES.get(kind, ("A", "B"))
        word = {"better": f"sharing {a} is better", "worse": f"sharing {b} is better"}.get(s["verdict"],
                                                                                        "neither side wins")
        similar = (f"mean cosine between tasks of λ_d's movement from its start {s['similar_a']:.2f} and of λ_b "
                   f"{s['similar_b']:.2f}" if kind == "vera" else
                   f"chance-corrected overlap between tasks {s['similar_a']:.2f} (A) and {s['similar_b']:.2f} (B)")
        lines.append(f"**{LABELS[kind]}: which side to share.** One head per task"
                     + ("" if kind == "vera" else f" at r' = {rank}") + f": sharing {a} minus sharing {b}, relative "
                     f"performance {s['difference']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}], so {word}; "
                     f"relative loss {s['loss_a']:.3f} ({a}) and {s['loss_b']:.3f} ({b}); {similar}.")
    reach = [f"{LABELS[k]} {fmt_short(c['ci'])}" for k, c in cheap.items()]
    lines.append(f"**Fewest bytes that keep {TARGET:.2f} of a type's own adapters** (by the lower end of the "
                 "interval; a type with no such point has none measured): " + "; ".join(reach) + ".")
    return ["- " + line for line in lines]


def summary_table(types_result: dict, recipes_result: dict | None, rank: int, file_mb: dict
                  ) -> tuple[list[list[str]], list[str]]:
    """``(rows, header)``: one row per type (LoRA first): MB per adapter file, own-task exact match, HydraOpt with a
    shared A (VeRA: λ_d) and one head per task, the side comparison, and the fewest bytes that keep :data:`TARGET`
    by the lower end of the interval. Bytes per task are the point's bytes over the number of tasks."""
    own = own_quality(types_result, recipes_result)
    sides = side_verdicts(types_result, rank)
    cheap = cheapest(types_result, recipes_result)
    by = {(p["kind"], p["name"]): p for p in points(types_result, recipes_result)}
    n = len(next(iter(types_result["types"].values()))["points"][0]["scores"])

    def at(p):
        if p is None:
            return "none"
        return (f"`{p['name']}`: {p['bytes'] / n / 1e6:.3f} MB ({p['relative_bytes']:.3f}), "
                f"{p['relative']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]")

    rows = []
    for kind in entries(types_result, recipes_result):
        a, b = SIDE_NAMES.get(kind, ("A", "B"))
        s = sides.get(kind)
        side = ("not measured here" if s is None else
                f"{a} − {b}: {s['difference']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}], " + {
                    "better": f"{a} wins", "worse": f"{b} wins"}.get(s["verdict"], "within noise"))
        rows.append([LABELS[kind], f"{file_mb[kind]:.3f}", f"{own[kind]['mean']:.3f}",
                     at(by.get((kind, side_pair(kind, rank)[0]))), side, at(cheap[kind]["ci"])])
    return rows, ["type", "MB per adapter file", "own exact match",
                  "shared A' (VeRA: λ_d'), one head per task: MB per task (of own), relative performance [95 % CI]",
                  "which side to share (paired difference)", f"fewest bytes keeping {TARGET:.2f} (lower end of CI)"]


def type_table(types_result: dict, recipes_result: dict | None, kind: str) -> tuple[list[list[str]], list[str]]:
    """``(rows, header)``: every point of ``kind`` with bytes, loss, relative performance [CI] and exact match."""
    rows = []
    for p in points(types_result, recipes_result):
        if p["kind"] != kind:
            continue
        rows.append([f"`{p['name']}`", f"{p['relative_bytes']:.3f}", f"{p['relative_loss']:.4f}",
                     f"{p['relative']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]", f"{p['exact_match']:.3f}"])
    space = "W" if kind == "dora" else "dW"
    return rows, ["point", "bytes (of the own adapters)", f"relative loss ({space})", "relative performance [95 % CI]",
                  "exact match"]


def frontier_axes(ax, types_result: dict, recipes_result: dict | None = None):
    """Relative performance (with its interval) against bytes relative to each type's own adapters, one colour per
    type; the individual adapters are the point (1, 1). Returns ``ax``."""
    import seaborn as sns

    kinds = list(entries(types_result, recipes_result))
    colors = dict(zip(kinds, sns.color_palette("colorblind", len(kinds))))
    markers = dict(zip(kinds, "osD^"))
    drawn = False
    for kind in kinds:
        mine = [p for p in points(types_result, recipes_result) if p["kind"] == kind and _finite(p["relative"])
                and _finite(p["lo"]) and _finite(p["hi"])]
        if not mine:  # no finite relative performance (own adapters at 0 exact match: the tiny preset)
            continue
        drawn = True
        x = [p["relative_bytes"] for p in mine]
        y = [p["relative"] for p in mine]
        err = [[p["relative"] - p["lo"] for p in mine], [p["hi"] - p["relative"] for p in mine]]
        ax.errorbar(x, y, yerr=err, fmt=markers[kind], color=colors[kind], capsize=2, alpha=0.85, label=LABELS[kind])
    ax.axhline(TARGET, ls=":", color="0.5")
    if drawn:
        ax.set_xscale("log")
    ax.set_xlabel("bytes, relative to the type's own adapter files")
    ax.set_ylabel("relative performance (exact match)")
    if drawn:
        ax.legend(fontsize="small")
    return ax
