"""Helpers for the book chapter "HydraOpt step by step": knob grids, Adam traces, weighted losses.

Everything here reads a :class:`~hydralib.merge.hydraopt.HydraOptResult` (or
runs :func:`~hydralib.merge.hydraopt.hydraopt`) and returns plain numbers,
rows or a matplotlib Axes; nothing forms a dense ``d_out x d_in`` update.

* :func:`layer_modules`: the modules of some layers (e.g. first and last), for
  a solver demo on a subset;
* :func:`adam_trace`, :func:`steps_within`: Adam's loss relative to the exact
  floor, step by step, and when it first comes within a tolerance;
* :func:`weighted_losses`: a result's reconstruction error under both
  weightings (pooled over tasks, or each task relative to its own update);
* :class:`KnobSetting`, :func:`knob_settings`, :func:`run_knobs`: the grid of
  heads x rank x side of the frontier (``hydralib.suite.frontier``) plus a
  rank sweep and the norm weighting, solved exactly; :func:`pick` and
  :func:`side_pairs` find rows of that table;
* :func:`stored_frontier`, :func:`frontier_name`: the frontier run's rows
  when they are available without recomputing for hours;
* :func:`knobs_axes`, :func:`adam_axes`: the chapter's two figures.

Example
-------
>>> from hydralib.synthetic import random_lora_factors, synthetic_tasks
>>> from hydralib.merge.hydraopt import hydraopt
>>> tasks, meta = synthetic_tasks(["qa", "summary"], ["en", "de"])
>>> shapes = {"model.layers.0.self_attn.q_proj": (12, 10), "model.layers.1.self_attn.q_proj": (12, 10)}
>>> factors = random_lora_factors(4, shapes, rank=2, seed=0, task_names=tasks)
>>> layer_modules(list(shapes), layers=[-1])
['model.layers.1.self_attn.q_proj']
>>> result = hydraopt(factors, heads="application", rank=2, metadata=meta, progress=False)
>>> losses = weighted_losses(result, factors)
>>> abs(losses["pooled"] - result.total_loss / result.total_energy) < 1e-6   # the library works in float32
True
>>> adam = hydraopt(factors, heads="application", rank=2, metadata=meta, solver="adam", progress=False)
>>> steps, excess = adam_trace(adam)
>>> len(steps) == max(m.steps for m in adam.modules.values()), bool(excess[0] > excess[-1])
(True, True)
>>> frontier_name(KnobSetting("application", 8, "A"))
'hydraopt-A-application-r8'
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "layer_modules",
    "adam_trace",
    "steps_within",
    "adam_axes",
    "weighted_losses",
    "KnobSetting",
    "knob_settings",
    "frontier_name",
    "stored_frontier",
    "run_knobs",
    "pick",
    "side_pairs",
    "knobs_axes",
    "heads_label",
]


# ----------------------------------------------------------------------------- modules


def layer_modules(modules: Sequence[str], layers: Sequence[int] = (0, -1)) -> list[str]:
    """The modules whose layer index is one of ``layers`` (negative: from the last layer), in the given order.

    Layers are read with :func:`hydralib.analysis.core.parse_module_name`
    (``model.layers.3.self_attn.q_proj`` is layer 3); modules without a layer
    index are left out.
    """
    from ..analysis.core import parse_module_name

    layer_of = {m: parse_module_name(m).layer for m in modules}
    present = sorted({v for v in layer_of.values() if v is not None})
    if not present:
        return []
    wanted = {present[i] for i in layers if -len(present) <= i < len(present)}
    return [m for m in modules if layer_of[m] in wanted]


# ----------------------------------------------------------------------------- Adam against the floor


def adam_trace(result) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (T,), excess (T,))``: Adam's total loss over modules relative to the total exact floor, minus 1.

    ``excess[t] = sum_m L_m(t) / sum_m floor_m - 1`` where ``L_m(t)`` is the
    loss of module m before step t (``history``); a module that stopped
    earlier contributes its returned (best) loss from then on. ``T`` is the
    largest number of steps any module ran.
    """
    modules = [m for m in result.modules.values() if m.history]
    if not modules:
        raise ValueError("adam_trace: the result has no Adam loss history (solver='adam')")
    length = max(len(m.history) for m in modules)
    total = np.zeros(length)
    for m in modules:
        h = np.asarray(m.history, dtype=np.float64)
        total += np.concatenate([h, np.full(length - len(h), m.loss)])
    floor = sum(m.floor for m in modules)
    return np.arange(1, length + 1), total / floor - 1.0


def steps_within(result, tolerance: float = 0.01) -> dict[str, int | None]:
    """Per module, the first step whose loss is within ``(1 + tolerance)`` of the exact floor (``None``: never)."""
    out = {}
    for name, m in result.modules.items():
        hits = [t for t, value in enumerate(m.history or [], start=1) if value <= (1 + tolerance) * m.floor]
        out[name] = hits[0] if hits else None
    return out


def adam_axes(ax, result, tolerance: float = 0.01):
    """Adam's loss / floor - 1 against steps (log scale): every module thin, the total bold; returns ``ax``."""
    from ..plotting import _palette

    for m in result.modules.values():
        if not m.history:
            continue
        excess = np.asarray(m.history) / m.floor - 1.0
        ax.plot(np.arange(1, len(excess) + 1), np.where(excess > 0, excess, np.nan), color="0.75", linewidth=0.8)
    steps, excess = adam_trace(result)
    ax.plot(steps, np.where(excess > 0, excess, np.nan), color=_palette(1)[0], linewidth=2,
            label=f"total over {len(result.modules)} modules")
    ax.plot([], [], color="0.75", linewidth=0.8, label="each module")
    ax.axhline(tolerance, color="0.3", linestyle="--", linewidth=1, label=f"{100 * tolerance:g} % above the floor")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 1e-7), high)  # float32 rounding noise lies below
    ax.set_xlabel("Adam step")
    ax.set_ylabel("loss / exact floor - 1")
    ax.legend()
    return ax


# ----------------------------------------------------------------------------- weighted losses


def _factor_lists(aset, module):
    As, Bs, ss = [], [], []
    for task in aset.tasks:
        A, B, s = aset.factors(task, module)
        As.append(A.double())
        Bs.append(B.double())
        ss.append(float(s))
    return As, Bs, ss


def weighted_losses(result, adapters) -> dict[str, float]:
    """A result's reconstruction error under both weightings, on the factors.

    * ``pooled``: ``sum_{m,i} ||B'A' - dW_i||^2 / sum_{m,i} ||dW_i||^2`` (the
      uniform weighting's loss relative to its energy: large updates count more);
    * ``per_task``: the mean over tasks and modules of ``||B'A' - dW_i||^2 /
      ||dW_i||^2`` (the norm weighting's loss relative to its energy: every
      task's update counts the same).

    Whatever weighting ``result`` was fitted with. Each term goes through
    :func:`~hydralib.merge.hydraopt.objective` (``r x r`` Grams; side B on the
    transposed factors).
    """
    from ..merge.hydraopt import _as_adapter_set, objective, transpose_factors

    aset = _as_adapter_set(adapters)
    index = [result.head_index(t) for t in aset.tasks]
    err_pooled = energy_pooled = per_task = 0.0
    count = 0
    for module, m in result.modules.items():
        As, Bs, ss = _factor_lists(aset, module)
        shared, heads = m.shared.double(), m.heads.double()
        if result.side == "B":  # solve orientation: dW^T = A^T B^T, shared B'^T (r', d_out), heads A'_k^T
            As, Bs = transpose_factors(As, Bs)
            shared, heads = shared.T.contiguous(), heads.transpose(1, 2).contiguous()
        norms = torch.tensor([s * s * float(((B.T @ B) * (A @ A.T)).sum()) for A, B, s in zip(As, Bs, ss)],
                             dtype=torch.float64)
        err_pooled += objective(shared, heads, As, Bs, ss, torch.ones_like(norms), index)
        energy_pooled += float(norms.sum())
        per_task += objective(shared, heads, As, Bs, ss, 1.0 / norms, index)
        count += len(As)
    return {"pooled": err_pooled / energy_pooled, "per_task": per_task / count}


# ----------------------------------------------------------------------------- the knobs


@dataclass(frozen=True)
class KnobSetting:
    """One HydraOpt setting: ``heads`` (as :func:`~hydralib.merge.hydraopt.hydraopt` takes it), rank r', side, weighting."""

    heads: str | int
    rank: int
    side: str = "A"
    weighting: str = "uniform"
    knob: str = "heads x rank x side"


def knob_settings(preset) -> list[KnobSetting]:
    """The frontier's HydraOpt grid (:func:`hydralib.suite.frontier.default_methods`: heads in {1,
    application, language, clustered K, task} x r' in {r, 2r} x side in {A, B}), then a rank sweep
    (r/2 and 4r, one head per task, side A) and the norm weighting (application and task heads, r, side A)."""
    from .frontier import default_methods

    r = preset.lora_rank
    grid = [KnobSetting(s.params["heads"], s.params["rank"], s.params["side"])
            for s in default_methods(preset) if s.family == "hydraopt"]
    sweep = [KnobSetting("task", rank, "A", knob="rank") for rank in (max(1, r // 2), 4 * r) if rank != r]
    weighting = [KnobSetting(h, r, "A", "norm", knob="weighting") for h in ("application", "task")]
    return grid + sweep + weighting


def frontier_name(setting: KnobSetting) -> str:
    """The frontier row name of a uniform-weighted setting: ``hydraopt-<side>-<heads>-r<rank>``."""
    return f"hydraopt-{setting.side}-{setting.heads}-r{setting.rank}"


def stored_frontier(preset, n_eval: int = 50, n_tune: int = 16, progress: bool = False) -> dict | None:
    """The frontier run of ``preset`` when it is cheap to have: the stored file if its input hash matches;
    otherwise recomputed for presets other than ``default`` (seconds for ``tiny``), and ``None`` for
    ``default`` (recomputing takes about an hour: ``make frontier``)."""
    from .frontier import frontier_results

    return frontier_results(preset, n_eval=n_eval, n_tune=n_tune, progress=progress,
                            stored_only=preset.name == "default")


def heads_label(heads, n_heads: int) -> str:
    """A short label: ``"1 head"``, ``"application (5)"``, ``"6 clusters"``, ``"task (40)"``."""
    if heads == 1:
        return "1 head"
    if isinstance(heads, int):
        return f"{n_heads} clusters"
    return f"{heads} ({n_heads})"


def run_knobs(aset, settings: Sequence[KnobSetting], frontier: Mapping | None = None,
              device=None, progress: bool = False) -> list[dict]:
    """Solve every setting exactly on the whole adapter set; one row (dict) per setting.

    Row keys: ``setting`` (the :class:`KnobSetting`), ``knob``, ``heads``
    (label), ``n_heads``, ``rank``, ``side``, ``weighting``, ``seconds``,
    ``relative_storage`` (numbers stored / keeping every adapter),
    ``relative_loss`` (pooled error, see :func:`weighted_losses`),
    ``per_task_error``, ``floor_gap`` (``|loss - floor| / floor`` of the
    fitted objective), and from ``frontier`` (rows of
    :func:`hydralib.suite.frontier.run_frontier`, uniform settings only)
    ``relative_performance`` and ``exact_match`` (NaN where absent).
    """
    from tqdm.auto import tqdm

    from ..merge.hydraopt import hydraopt

    by_name = {row["name"]: row for row in (frontier or {}).get("rows", [])}
    rows = []
    for setting in tqdm(settings, desc="knobs", disable=not progress):
        start = time.perf_counter()
        result = hydraopt(aset, heads=setting.heads, rank=setting.rank, side=setting.side,
                          weighting=setting.weighting, device=device, progress=False)
        seconds = time.perf_counter() - start
        losses = weighted_losses(result, aset)
        scored = by_name.get(frontier_name(setting)) if setting.weighting == "uniform" else None
        rows.append({
            "setting": setting, "knob": setting.knob, "heads": heads_label(setting.heads, result.n_heads),
            "n_heads": result.n_heads, "rank": setting.rank, "side": setting.side, "weighting": setting.weighting,
            "seconds": seconds, "relative_storage": result.relative_storage(aset),
            "relative_loss": losses["pooled"], "per_task_error": losses["per_task"],
            "floor_gap": abs(result.total_loss - result.total_floor) / max(result.total_floor, 1e-300),
            "relative_performance": float(scored["relative"]) if scored and scored["relative"] is not None else math.nan,
            "exact_match": float(scored["exact_match"]) if scored else math.nan,
        })
    return rows


def pick(rows: Sequence[Mapping], heads, rank: int, side: str = "A", weighting: str = "uniform") -> Mapping:
    """The row of :func:`run_knobs` for one setting (the first one, if a setting appears in two knobs)."""
    for row in rows:
        s = row["setting"]
        if s.heads == heads and s.rank == rank and s.side == side and s.weighting == weighting:
            return row
    raise KeyError(f"no knob row for heads={heads!r}, rank={rank}, side={side!r}, weighting={weighting!r}")


def side_pairs(rows: Sequence[Mapping]) -> list[tuple[Mapping, Mapping]]:
    """``(A-shared row, B-shared row)`` for every uniform setting of the grid with more than one head
    (with one head both sides give the same rank-r' approximation of the mean update)."""
    grid = [r for r in rows if r["knob"] == "heads x rank x side"]
    out = []
    for a in grid:
        if a["side"] == "A" and a["n_heads"] > 1:
            out.append((a, pick(grid, a["setting"].heads, a["rank"], "B")))
    return out


def knobs_axes(ax, rows: Sequence[Mapping], y: str = "relative_loss", ylabel: str = "relative reconstruction loss",
               logy: bool = True):
    """``y`` against relative storage for the heads x rank x side grid: one line per (side, r'),
    heads ordered by storage, labelled at the side-A points of the smallest rank; returns ``ax``."""
    from ..plotting import _palette

    grid = [r for r in rows if r["knob"] == "heads x rank x side"]
    ranks = sorted({r["rank"] for r in grid})
    colors = dict(zip(("A", "B"), _palette(2)))
    styles = dict(zip(ranks, ("-", "--", ":", "-.")))
    for side in ("A", "B"):
        for rank in ranks:
            line = sorted((r for r in grid if r["side"] == side and r["rank"] == rank), key=lambda r: r["relative_storage"])
            xs = [r["relative_storage"] for r in line]
            ys = [r[y] for r in line]
            ax.plot(xs, ys, styles[rank], marker="o", color=colors[side], label=f"{side} shared, r' = {rank}")
            if side == "A" and rank == ranks[0]:
                for r in line:
                    if np.isfinite(r[y]):
                        ax.annotate(r["heads"], (r["relative_storage"], r[y]), xytext=(4, 4),
                                    textcoords="offset points", fontsize="x-small")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("storage relative to keeping every adapter")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax
