"""Tables, figures and computed verdicts for the chapters on merging baselines and on the frontier.

Everything here reads the result of :func:`hydralib.suite.frontier.frontier_results`
(a dict with ``rows``, one per method setting) and never types a number: the
chapters glue what these functions return.

* labels and spaces of the rows (:func:`label`, :func:`space`, :func:`head_kind`);
* the tuning table of the one-adapter baselines (:func:`tuning_table`) and the
  dW-space / factor-space pairs (:func:`space_pairs`);
* the factor-space pitfall of peft's ``add_weighted_adapter``, measured on the
  factors (:func:`peft_linear_factors`, :func:`factor_space_error`);
* the table and figure of every point (:func:`frontier_table`,
  :func:`plot_frontier`) and the Pareto front on finite points (:func:`front`);
* the verdicts on the paper's claims (:func:`claims`, built from :func:`best_within`,
  :func:`cheapest_reaching`, :func:`side_budgets`, :func:`drop_verdict`, :func:`compare_words`);
* the reconstruction loss against the scores (:func:`loss_score_correlation`, :func:`plot_loss_score`).

Relative performance (the paper's metric) is undefined when every own-LoRA
score is 0 (the ``tiny`` preset): :func:`performance_key` then falls back to
absolute exact match for the figure and the table, and :func:`num` renders
undefined values as "n/a".

Example
-------
>>> rows = [{"name": "individual", "family": "individual", "relative_storage": 1.0, "relative": 1.0},
...         {"name": "ties", "family": "baseline", "relative_storage": 0.025, "relative": 0.8},
...         {"name": "hydraopt-A-1-r8", "family": "hydraopt", "relative_storage": 0.025, "relative": 0.85,
...          "params": {"heads": 1, "rank": 8, "side": "A"}, "heads": 1}]
>>> [label(r) for r in rows]
['individual LoRAs', 'TIES', "HydraOpt A, 1 head, r'=8"]
>>> [rows[i]["name"] for i in front(rows, "relative")]
['hydraopt-A-1-r8', 'individual']
>>> best_within(rows[2:], "relative", 0.52)["name"], num(float("nan"))
('hydraopt-A-1-r8', 'n/a')
>>> drop_verdict(0.99)
"inside the paper's 0.2-1.8 % range"
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .frontier import pareto_front

__all__ = [
    "BASELINE_LABELS", "PAPER_DROP", "PAPER_STORAGE", "load_frontier", "finite", "num", "label", "space",
    "values_text", "head_kind", "performance_key", "rows_of", "tuning_table", "space_pairs", "peft_linear_factors",
    "factor_space_error", "front", "frontier_table", "plot_frontier", "best", "best_within", "cheapest_reaching",
    "side_pairs", "side_budgets", "drop_verdict", "compare_words", "loss_score_correlation", "plot_loss_score",
    "claims",
]

#: Display names of the one-adapter methods (dW space, then peft's factor space).
BASELINE_LABELS = {
    "individual": "individual LoRAs",
    "task_arithmetic": "TA", "ties": "TIES", "dare_linear": "DARE", "dare_ties": "DARE-TIES",
    "peft_linear": "peft linear", "peft_ties": "peft TIES", "peft_dare_ties": "peft DARE-TIES",
}
#: dW-space baseline -> peft's factor-space counterpart (same combination, same tuning).
PEFT_COUNTERPART = {"task_arithmetic": "peft_linear", "ties": "peft_ties", "dare_ties": "peft_dare_ties"}
#: The paper's headline: at 52 % of the storage of all adapters (48 % saved) a 0.2-1.8 % drop.
PAPER_STORAGE = 0.52
PAPER_DROP = (0.002, 0.018)
HEAD_KINDS = ("1", "application", "language", "clustered", "task")
#: Ticks of the storage axis (relative storage) where they fall inside the data's range.
STORAGE_TICKS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _head_colours() -> dict:
    """One colour per kind of heads, from the book's colour-blind palette (blue, orange, green, purple, brown)."""
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10)
    return dict(zip(HEAD_KINDS, [palette[i] for i in (0, 1, 2, 4, 5)]))


def _storage_axis(ax, xs: Sequence[float], total_bytes: float | None) -> None:
    """Log x axis with plain-number ticks at the smallest storage and at round values above it (and a top axis
    in MB when ``total_bytes`` is given)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    lo, hi = min(xs), max(xs)
    ticks = sorted({lo, *(t for t in STORAGE_TICKS if lo * 1.3 <= t <= hi * 1.2)})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if total_bytes:
        mb = total_bytes / 1e6
        top = ax.secondary_xaxis("top", functions=(lambda v: v * mb, lambda v: v / mb))
        top.xaxis.set_major_locator(FixedLocator([t * mb for t in ticks]))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xlabel("MB in half precision")


def load_frontier(preset=None) -> dict:
    """:func:`~hydralib.suite.frontier.frontier_results` without progress bars (stored JSON when its input
    hash matches, recomputed otherwise)."""
    from .frontier import frontier_results

    return frontier_results(preset, progress=False)


# ----------------------------------------------------------------------------- labels and formatting


def finite(x) -> bool:
    """``x`` is a real number that is not NaN or infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, spec: str = ".3f") -> str:
    """``format(x, spec)``, or ``"n/a"`` when ``x`` is undefined (NaN, None)."""
    return format(x, spec) if finite(x) else "n/a"


def head_kind(row: dict) -> str:
    """How a HydraOpt row groups tasks into heads: ``"1"``, ``"application"``, ``"language"``,
    ``"clustered"`` (an int K > 1 of :func:`~hydralib.merge.hydraopt.group_by_clustering`) or ``"task"``."""
    heads = row["params"]["heads"]
    if heads == 1:
        return "1"
    return "clustered" if isinstance(heads, int) else str(heads)


def label(row: dict) -> str:
    """A short display name: ``TIES``, ``peft linear``, ``HydraOpt B, 5 heads (application), r'=16``."""
    if row["family"] != "hydraopt":
        return BASELINE_LABELS.get(row["name"], row["name"])
    p, k = row["params"], row.get("heads", row["params"]["heads"])
    kind = head_kind(row)
    heads = "1 head" if kind == "1" else f"{k} heads ({kind})"
    return f"HydraOpt {p['side']}, {heads}, r'={p['rank']}"


def space(row: dict) -> str:
    """Where a row's merge acts: dW, the factors (peft), or a shared factor with heads (HydraOpt)."""
    return {"individual": "-", "baseline": "dW", "peft": "factors (A, B separately)",
            "hydraopt": f"shared {row.get('params', {}).get('side', 'A')}' + heads"}[row["family"]]


def performance_key(rows: Sequence[dict]) -> str:
    """``"relative"`` when some merged row has a defined relative performance, else ``"exact_match"``."""
    return "relative" if any(finite(r.get("relative")) for r in rows if r["family"] != "individual") else "exact_match"


def rows_of(result: dict, *families: str) -> list[dict]:
    """The rows of the given families (``"individual"``, ``"baseline"``, ``"peft"``, ``"hydraopt"``), in order."""
    return [r for r in result["rows"] if r["family"] in families]


# ----------------------------------------------------------------------------- the baselines chapter


def values_text(values: dict) -> str:
    """Tuned values as text: ``{"lam": 2.0, "density": 0.5}`` -> ``λ=2, ρ=0.5`` (``-`` when empty)."""
    names = {"lam": "λ", "density": "ρ"}
    return ", ".join(f"{names.get(k, k)}={v:g}" for k, v in values.items()) or "-"


def tuning_table(result: dict) -> tuple[list[list[str]], list[str]]:
    """One row per tuned one-adapter method: every validation trial, the chosen values, their validation score,
    and the test exact match and relative performance; ``(rows, header)`` for
    :func:`~hydralib.tables.markdown_table`."""
    out = []
    for r in rows_of(result, "baseline", "peft"):
        chosen = next((t["score"] for t in r["trials"] if t["values"] == r["tuned"]), float("nan"))
        trials = "; ".join(f"{values_text(t['values'])}: {t['score']:.3f}" for t in r["trials"])
        out.append([label(r), space(r), trials, values_text(r["tuned"]), num(chosen), num(r["exact_match"]),
                    num(r["relative"])])
    header = ["method", "space", "validation trials (values: mean exact match)", "chosen", "validation",
              "test exact match", "relative"]
    return out, header


def space_pairs(result: dict) -> list[tuple[dict, dict]]:
    """``(dW-space row, peft factor-space row)`` for TA / peft linear, TIES / peft TIES, DARE-TIES / peft DARE-TIES."""
    by_name = {r["name"]: r for r in result["rows"]}
    return [(by_name[a], by_name[b]) for a, b in PEFT_COUNTERPART.items() if a in by_name and b in by_name]


def peft_linear_factors(As, Bs, scalings, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors peft's ``add_weighted_adapter(..., combination_type="linear")`` writes, on the factors.

    peft scales both sides by ``sqrt(w_i s_i)`` and sums each side on its own:
    ``A_m = sum_i sqrt(w_i s_i) A_i`` ``(r, d_in)``, ``B_m = sum_i sqrt(w_i s_i) B_i``
    ``(d_out, r)``, scaling 1 (positive ``w_i s_i``; peft puts a negative sign on A).
    The merged update ``B_m A_m`` holds every cross product ``B_i A_j``.
    """
    coeffs = [math.copysign(math.sqrt(abs(w * s)), w * s) for w, s in zip(weights, scalings)]
    A_m = sum(c * A for c, A in zip(coeffs, As))
    B_m = sum(abs(c) * B for c, B in zip(coeffs, Bs))
    return A_m, B_m


def factor_space_error(As, Bs, scalings, weights, rank: int | None = None) -> dict[str, float]:
    """How far peft's linear merge is from the weighted sum ``M = sum_i w_i dW_i``, at one module, on the factors.

    Inputs: A_i ``(r, d_in)``, B_i ``(d_out, r)``, scalings s_i, weights w_i.
    Returns ``relative_error`` = ``||B_m A_m - M||_F / ||M||_F`` (peft as it is),
    ``cosine`` between ``B_m A_m`` and ``M``, ``best_scale_error`` =
    ``sqrt(1 - cosine^2)`` (the error left after the best global scale, which
    tuning ``lam`` could at most find; that scale is ``best_scale`` =
    ``<B_m A_m, M> / ||B_m A_m||^2``), ``truncation_error`` = the error of the
    best rank-``rank`` approximation of M (the truncated SVD that task
    arithmetic stores; ``rank`` defaults to the largest r_i), and
    ``mean_norm_sq`` = ``||M||_F^2``. Every term is a trace of ``r x r`` Gram
    blocks (:func:`~hydralib.merge.lowrank.delta_inner_products`,
    :func:`~hydralib.merge.lowrank.lora_inner`); no ``d_out x d_in`` matrix is formed.
    """
    from ..merge.lowrank import delta_inner_products, lora_inner, lowrank_svd

    As = [A.double() for A in As]
    Bs = [B.double() for B in Bs]
    c = torch.tensor([float(w) * float(s) for w, s in zip(weights, scalings)], dtype=torch.float64)
    A_m, B_m = peft_linear_factors(As, Bs, scalings, weights)
    gram = delta_inner_products(As, Bs, [1.0] * len(As))          # <B_i A_i, B_j A_j>
    mean_sq = float(c @ gram @ c)                                    # ||M||^2
    peft_sq = float(lora_inner(A_m, B_m, A_m, B_m))                  # ||B_m A_m||^2
    cross = float(sum(ci * lora_inner(A_m, B_m, A, B) for ci, A, B in zip(c.tolist(), As, Bs)))  # <B_m A_m, M>
    rank = int(rank or max(int(A.shape[0]) for A in As))
    tail = lowrank_svd(As, Bs, c.tolist(), rank).tail_energy
    cosine = cross / math.sqrt(peft_sq * mean_sq)
    return {"relative_error": math.sqrt(max(peft_sq - 2 * cross + mean_sq, 0.0) / mean_sq),
            "cosine": cosine, "best_scale": cross / peft_sq,
            "best_scale_error": math.sqrt(max(1.0 - cosine ** 2, 0.0)),
            "truncation_error": math.sqrt(max(tail, 0.0) / mean_sq), "mean_norm_sq": mean_sq}


# ----------------------------------------------------------------------------- the frontier chapter


def front(rows: Sequence[dict], key: str) -> list[int]:
    """Indices of ``rows`` on the Pareto front of (``relative_storage``, ``row[key]``), among finite points,
    by :func:`~hydralib.suite.frontier.pareto_front`; sorted by storage."""
    idx = [i for i, r in enumerate(rows) if finite(r.get(key))]
    chosen = pareto_front([(rows[i]["relative_storage"], rows[i][key]) for i in idx])
    return [idx[j] for j in chosen]


def frontier_table(rows: Sequence[dict], on_front: Sequence[int] = (), base_rank: int | None = None
                   ) -> tuple[list[list[str]], list[str]]:
    """Every point: method, space, heads K, rank, numbers stored, fp16 bytes, relative storage, test exact match,
    relative performance, and whether it is on the Pareto front; ``(rows, header)``. ``base_rank``: the adapters'
    rank, shown for the individual adapters and for peft's merges (which keep it)."""
    from ..storage import human_bytes

    marks = set(on_front)
    out = []
    for i, r in enumerate(rows):
        heads = r.get("heads", "-") if r["family"] == "hydraopt" else ("-" if r["family"] == "individual" else 1)
        rank = r.get("params", {}).get("rank", base_rank if base_rank is not None else "-")
        out.append([label(r), space(r), heads, rank, f"{r['stored']:,}", human_bytes(r["bytes_fp16"]),
                    f"{r['relative_storage']:.3f}", num(r["exact_match"]), num(r["relative"]),
                    "yes" if i in marks else ""])
    header = ["method", "space", "heads K", "rank", "numbers stored", "bytes (fp16)", "relative storage",
              "test exact match", "relative", "Pareto"]
    return out, header


_BASELINE_MARKERS = {"task_arithmetic": "X", "ties": "P", "dare_linear": "D", "dare_ties": "v"}
_PEFT_BASE = {"peft_linear": "task_arithmetic", "peft_ties": "ties", "peft_dare_ties": "dare_ties"}


def plot_frontier(ax, rows: Sequence[dict], key: str, on_front: Sequence[int], base_rank: int,
                  total_bytes: float | None = None):
    """Storage (log x) against ``row[key]``: HydraOpt coloured by heads, circle = A shared, square = B shared,
    large = rank ``2 base_rank``; baselines as grey markers (peft's hollow); the Pareto front as a dashed step line.
    With ``total_bytes`` (fp16 bytes of all adapters), a top axis in MB. Returns ``ax``."""
    from matplotlib.lines import Line2D

    colours = _head_colours()
    handles = []
    for r in rows:
        x, y = r["relative_storage"], r[key]
        if not finite(y):
            continue
        if r["family"] == "hydraopt":
            big = r["params"]["rank"] > base_rank
            ax.scatter(x, y, s=110 if big else 40, marker="o" if r["params"]["side"] == "A" else "s",
                       color=colours[head_kind(r)], edgecolor="black", linewidth=0.5, alpha=0.85, zorder=3)
        elif r["family"] == "individual":
            ax.scatter(x, y, s=200, marker="*", color="black", zorder=4)
            handles.append(Line2D([], [], marker="*", color="black", linestyle="", markersize=12, label=label(r)))
        else:
            peft = r["family"] == "peft"
            marker = _BASELINE_MARKERS[_PEFT_BASE.get(r["name"], r["name"])]
            ax.scatter(x, y, s=70, marker=marker, facecolor="none" if peft else "0.35", edgecolor="0.2",
                       linewidth=1.2, zorder=3)
            handles.append(Line2D([], [], marker=marker, linestyle="", markersize=8, markerfacecolor="none" if peft
                                  else "0.35", markeredgecolor="0.2", color="0.2", label=label(r)))
    pts = sorted((rows[i]["relative_storage"], rows[i][key]) for i in on_front)
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="0.3", linestyle="--", linewidth=1,
                zorder=2)
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="Pareto front"))
    handles += [Line2D([], [], marker="o", linestyle="", color=colours[k], markeredgecolor="black", markersize=7,
                       label=f"HydraOpt, heads: {k}") for k in HEAD_KINDS]
    handles += [Line2D([], [], marker=m, linestyle="", color="white", markeredgecolor="black", markersize=s,
                       label=t) for m, s, t in (("o", 7, "A' shared (circle)"), ("s", 7, "B' shared (square)"),
                                                ("o", 5, f"rank r'={base_rank} (small)"),
                                                ("o", 10, f"rank r'={2 * base_rank} (large)"))]
    _storage_axis(ax, [r["relative_storage"] for r in rows if finite(r[key])] or [1.0], total_bytes)
    ax.set_xlabel("storage relative to keeping every adapter (log scale)")
    ax.set_ylabel({"relative": "relative performance (mean of merged / own)",
                   "exact_match": "mean test exact match"}[key])
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return ax


def best(rows: Sequence[dict], key: str) -> dict | None:
    """The row with the highest finite ``row[key]`` (ties: the smaller storage), or None."""
    ok = [r for r in rows if finite(r.get(key))]
    return max(ok, key=lambda r: (r[key], -r["relative_storage"])) if ok else None


def best_within(rows: Sequence[dict], key: str, max_storage: float) -> dict | None:
    """:func:`best` among the rows with ``relative_storage <= max_storage``."""
    return best([r for r in rows if r["relative_storage"] <= max_storage + 1e-12], key)


def cheapest_reaching(rows: Sequence[dict], key: str, level: float, strictly: bool = False) -> dict | None:
    """The row of least storage whose ``row[key]`` is at least ``level`` (above it with ``strictly``), or None."""
    if not finite(level):
        return None
    ok = [r for r in rows if finite(r.get(key)) and (r[key] > level if strictly else r[key] >= level)]
    return min(ok, key=lambda r: (r["relative_storage"], -r[key])) if ok else None


def side_pairs(rows: Sequence[dict]) -> list[tuple[dict, dict]]:
    """``(row with A shared, row with B shared)`` for every HydraOpt setting of heads and rank run on both sides."""
    hydra = [r for r in rows if r["family"] == "hydraopt"]
    setting = lambda r: (str(r["params"]["heads"]), r["params"]["rank"])  # noqa: E731
    b_rows = {setting(r): r for r in hydra if r["params"]["side"] == "B"}
    return [(r, b_rows[setting(r)]) for r in hydra if r["params"]["side"] == "A" and setting(r) in b_rows]


def side_budgets(rows: Sequence[dict], key: str) -> dict:
    """Side A against side B at equal storage budgets.

    For every storage level x of a HydraOpt setting, the best ``key`` of each
    side among its settings with storage <= x; counts the budgets where A is
    ahead, B is ahead, or they tie (levels that one side cannot reach are left
    out), and the mean difference A - B. ``pairs``: :func:`side_pairs` (same
    heads and rank on both sides, every setting).
    """
    hydra = [r for r in rows if r["family"] == "hydraopt" and finite(r.get(key))]
    by_side = {s: [r for r in hydra if r["params"]["side"] == s] for s in ("A", "B")}
    a_wins = b_wins = ties = 0
    diffs = []
    for x in sorted({r["relative_storage"] for r in hydra}):
        a, b = (best_within(by_side[s], key, x) for s in ("A", "B"))
        if a is None or b is None:
            continue
        d = a[key] - b[key]
        diffs.append(d)
        if abs(d) <= 1e-12:
            ties += 1
        elif d > 0:
            a_wins += 1
        else:
            b_wins += 1
    pairs = side_pairs(rows)
    winner = "A" if a_wins > b_wins else "B" if b_wins > a_wins else "neither"
    return {"a_wins": a_wins, "b_wins": b_wins, "ties": ties, "budgets": len(diffs),
            "mean_difference": sum(diffs) / len(diffs) if diffs else float("nan"), "winner": winner, "pairs": pairs}


def drop_verdict(relative: float, paper: tuple[float, float] = PAPER_DROP) -> str:
    """Where a drop ``1 - relative`` falls against the paper's range of drops."""
    if not finite(relative):
        return "not defined here (relative performance needs own-LoRA scores above 0)"
    drop = 1.0 - relative
    lo, hi = paper
    where = f"the paper's {100 * lo:.1f}-{100 * hi:.1f} % range"
    if drop < lo:
        return f"smaller than {where}" if drop >= 0 else f"a gain, better than {where}"
    return f"inside {where}" if drop <= hi else f"larger than {where}"


def compare_words(a: float, b: float) -> str:
    """``"at least as good as"`` when ``a >= b``, ``"worse than"`` otherwise; ``"not comparable with"`` if undefined."""
    if not (finite(a) and finite(b)):
        return "not comparable with"
    return "at least as good as" if a >= b else "worse than"


def loss_score_correlation(rows: Sequence[dict], key: str) -> float:
    """Spearman rank correlation, over the HydraOpt rows, of the relative reconstruction loss
    (``loss / energy`` of the objective) with ``row[key]``; NaN when fewer than 3 finite points or a constant input."""
    from scipy.stats import spearmanr

    pts = [(r["relative_loss"], r[key]) for r in rows
           if r["family"] == "hydraopt" and finite(r.get(key)) and finite(r.get("relative_loss"))]
    if len(pts) < 3 or len({p[0] for p in pts}) < 2 or len({p[1] for p in pts}) < 2:
        return float("nan")
    return float(spearmanr([p[0] for p in pts], [p[1] for p in pts]).statistic)


def plot_loss_score(ax, rows: Sequence[dict], key: str, base_rank: int):
    """HydraOpt settings: relative reconstruction loss (log x) against ``row[key]``, with the markers of
    :func:`plot_frontier` (colour = heads, circle/square = side A/B, size = rank). Returns ``ax``."""
    colours = _head_colours()
    for r in rows:
        if r["family"] != "hydraopt" or not finite(r.get(key)) or not finite(r.get("relative_loss")):
            continue
        ax.scatter(max(r["relative_loss"], 1e-12), r[key], s=110 if r["params"]["rank"] > base_rank else 40,
                   marker="o" if r["params"]["side"] == "A" else "s", color=colours[head_kind(r)],
                   edgecolor="black", linewidth=0.5, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("relative reconstruction loss  L / sum_i ||dW_i||^2  (log scale)")
    ax.set_ylabel({"relative": "relative performance", "exact_match": "mean test exact match"}[key])
    return ax


UNDEFINED = "undefined here (no task's own adapter scores above 0, so relative performance is not defined)"


def claims(result: dict, rank: int, level: float = 0.98) -> dict:
    """The paper's claims checked on a frontier result, on relative performance; every value is computed from its rows.

    ``rank`` is the adapters' rank r (the one-head comparison uses HydraOpt at
    rank r, the storage of one merged adapter). Returns Markdown phrases, to be
    glued into sentences:

    * ``half_storage``: the best HydraOpt setting with relative storage <=
      :data:`PAPER_STORAGE`, its storage, relative performance, drop, and where
      the drop falls against :data:`PAPER_DROP` (:func:`drop_verdict`);
    * ``one_head``: 1-head HydraOpt against the best tuned one-adapter merge
      (dW-space baselines and peft's), with :func:`compare_words`;
      ``one_head_words`` is that comparison alone;
    * ``beats_baselines``: the cheapest HydraOpt setting scoring above that
      merge, and its storage as a multiple of the merge's;
    * ``reaches_level``: the cheapest HydraOpt setting reaching ``level``;
    * ``sides``: side A against side B at equal storage budgets
      (:func:`side_budgets`); ``side_winner`` is ``A``, ``B`` or ``neither``.
    """
    rows = result["rows"]
    hydra, merges = rows_of(result, "hydraopt"), rows_of(result, "baseline", "peft")
    defined = performance_key(rows) == "relative"
    out: dict = {}
    b52 = best_within(hydra, "relative", PAPER_STORAGE)
    out["half_storage"] = (
        f"{label(b52)}, at relative storage {b52['relative_storage']:.3f}, with relative performance "
        f"{b52['relative']:.3f}: a drop of {100 * (1 - b52['relative']):.1f} %, {drop_verdict(b52['relative'])}"
        if b52 else UNDEFINED)
    bb = best(merges, "relative") or max(merges, key=lambda r: r["exact_match"])
    ones = [r for r in hydra if r.get("heads") == 1 and r["params"]["rank"] == rank]
    one = best(ones, "relative") or ones[0]
    out["one_head_words"] = compare_words(one["relative"], bb["relative"])
    out["one_head"] = (f"relative performance {num(one['relative'])}, {out['one_head_words']} the best tuned "
                       f"one-adapter merge, {label(bb)} ({values_text(bb['tuned'])}), at {num(bb['relative'])}")
    beat = cheapest_reaching(hydra, "relative", bb["relative"], strictly=True)
    out["beats_baselines"] = UNDEFINED if not defined else (
        f"{label(beat)}, at relative storage {beat['relative_storage']:.3f} "
        f"({beat['relative_storage'] / bb['relative_storage']:.1f} times the storage of {label(bb)}), with relative "
        f"performance {beat['relative']:.3f} against {bb['relative']:.3f}"
        if beat else f"none: no HydraOpt setting scores above {label(bb)} ({bb['relative']:.3f})")
    reach = cheapest_reaching(hydra, "relative", level)
    out["reaches_level"] = UNDEFINED if not defined else (
        f"{label(reach)}, at relative storage {reach['relative_storage']:.3f} ({_bytes(reach['bytes_fp16'])}), "
        f"with relative performance {reach['relative']:.3f}"
        if reach else f"none: no HydraOpt setting reaches {level:g}; the best reaches "
                      f"{best(hydra, 'relative')['relative']:.3f}")
    sides = side_budgets(rows, "relative")
    out["side_winner"] = sides["winner"]
    out["sides"] = UNDEFINED if not sides["budgets"] else (
        f"side A is ahead at {sides['a_wins']}, side B at {sides['b_wins']} and they tie at {sides['ties']} of "
        f"{sides['budgets']} storage budgets (mean difference A - B {sides['mean_difference']:+.3f}): "
        + ("neither side wins" if sides["winner"] == "neither" else f"side {sides['winner']} wins"))
    return out


def _bytes(n: float) -> str:
    from ..storage import human_bytes

    return human_bytes(n)
