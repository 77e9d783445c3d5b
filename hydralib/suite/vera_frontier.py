"""The VeRA frontier: every VeRA merge on a preset's VeRA zoo, tuned on validation, scored on test.

The same harness and the same tuning procedure as the LoRA frontier
(:mod:`hydralib.suite.frontier`, whose :func:`~hydralib.suite.frontier.tune`,
:func:`~hydralib.suite.frontier.score`, :func:`~hydralib.suite.frontier.relative`,
:func:`~hydralib.suite.frontier.finish`, :func:`~hydralib.suite.frontier.pareto_front`
and :func:`~hydralib.suite.frontier.inputs_hash` are used as they are), on the
zoo's ``vera`` group (:func:`load_vera_zoo`):

* ``individual``: every task with its own VeRA adapter (the reference);
* ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``: one VeRA adapter
  merged **on the vectors** (:func:`~hydralib.merge.vera.merge_vera_vectors`),
  ``lam`` (and ``density``) tuned on validation. Task weights are ``1/N`` for
  the summing methods and 1 for the sign-electing ones, as in the LoRA
  frontier, so ``lam = 1`` is "the averaged vectors";
* ``dense_task_arithmetic``: the dW-space reference
  (:func:`~hydralib.merge.vera.merge_vera_dense`): the mean update times a
  tuned ``lam``, stored as a LoRA of the VeRA rank r (exact: every VeRA update
  lies in the row space of the shared ``vera_A``). It is not a VeRA adapter;
* ``vera-hydraopt-<side>-<heads>``: the VeRA HydraOpt analogue
  (:func:`~hydralib.merge.vera.vera_hydraopt`, ALS) with heads in
  {1, application, language, task} and the shared vector on side ``d``
  (one lambda_d', a lambda_b' per head) or ``b`` (the mirror).

Storage is counted in **bytes** of half precision (2 bytes per stored number),
and relative to keeping every VeRA adapter. For VeRA only the vectors count:
the projections are regenerated from the PRNG key. The result also records
the bytes of the zoo's LoRA adapters (``lora_bytes_fp16``) so that the VeRA and
LoRA frontiers can share one bytes axis.

Relative performance is the LoRA frontier's, against the individual *VeRA*
adapters. The result is keyed by a hash of its inputs (the VeRA weight files
and configs, the method list, the sample sizes) and stored at
``results_path(preset, "vera-frontier")``; every finished method's row is kept
in ``results/vera-frontier-rows/`` so that an interrupted run resumes.

Example
-------
>>> specs = default_vera_methods(get_preset("tiny"))
>>> [s.name for s in specs][:6]
['individual', 'task_arithmetic', 'ties', 'dare_linear', 'dare_ties', 'dense_task_arithmetic']
>>> [s.name for s in specs if s.family == "vera_hydraopt"][:2]
['vera-hydraopt-d-1', 'vera-hydraopt-d-application']
>>> vera_label({"family": "vera_hydraopt", "params": {"heads": "language", "side": "b"}, "heads": 2})
"VeRA HydraOpt, shared λ_b', 2 heads (language)"
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from ..presets import get_preset
from .frontier import SUMMING, MethodSpec, finish, inputs_hash, method_rows, pareto_front, score

__all__ = [
    "VERA_FRONTIER_VERSION", "VECTOR_METHODS", "HEADS", "SIDES", "BYTES_PER_NUMBER", "LABELS",
    "default_vera_methods", "load_vera_zoo", "zoo_numbers", "build_vera_method", "vera_inputs_hash",
    "run_vera_frontier", "vera_frontier_results", "vera_label", "kind_of", "advantage", "carry_over",
    "joint_front", "plot_bytes_frontier", "main",
]

VERA_FRONTIER_VERSION = 1
#: The one-adapter merges on the vectors (names of :data:`hydralib.merge.MERGE_METHODS`).
VECTOR_METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties")
#: Groupings of tasks into heads, and the side whose vector is shared.
HEADS = (1, "application", "language", "task")
SIDES = ("d", "b")
#: Half precision, as the adapters are stored on disk.
BYTES_PER_NUMBER = 2
LABELS = {
    "individual": "individual VeRA adapters",
    "task_arithmetic": "VeRA TA", "ties": "VeRA TIES", "dare_linear": "VeRA DARE", "dare_ties": "VeRA DARE-TIES",
    "dense_task_arithmetic": "TA on dW (a LoRA of rank r)",
}


def _preset(preset):
    return preset if hasattr(preset, "tasks") else get_preset(preset)


def default_vera_methods(preset) -> list[MethodSpec]:
    """The VeRA frontier: the individual adapters; TA, TIES, DARE, DARE-TIES on the vectors (tuned); TA on dW
    stored at the VeRA rank (tuned); VeRA HydraOpt (ALS) with heads in :data:`HEADS` x side in :data:`SIDES`."""
    preset = _preset(preset)
    specs = [MethodSpec("individual", "individual", "individual")]
    for name in VECTOR_METHODS:
        tuned = ("lam",) if name == "task_arithmetic" else ("lam", "density")
        specs.append(MethodSpec(name, "vectors", name, {}, tuned))
    specs.append(MethodSpec("dense_task_arithmetic", "dense", "task_arithmetic", {"rank": preset.vera_rank}, ("lam",)))
    for side in SIDES:
        for heads in HEADS:
            specs.append(MethodSpec(f"vera-hydraopt-{side}-{heads}", "vera_hydraopt", "als",
                                    {"heads": heads, "side": side}))
    return specs


# ----------------------------------------------------------------------------- the zoo and its storage


def load_vera_zoo(preset=None, model=None):
    """The zoo's ``vera`` group as a VeRA :class:`~hydralib.adapters.AdapterSet` (task metadata included).

    The VeRA adapters do not store their projections (``save_projection=False``):
    they are regenerated from the PRNG key, which needs every module's ``d_in``.
    It comes from ``model`` when given, else from the zoo's LoRA adapters (same
    modules), else from the preset's base model.
    """
    from ..storage import module_shapes
    from .artifacts import load_zoo, zoo_groups

    preset = _preset(preset)
    if model is None and zoo_groups(preset).get("lora"):
        return load_zoo(preset, "vera", module_shapes=module_shapes(load_zoo(preset, "lora")))
    if model is None:
        from .models import load_base_model

        model = load_base_model(preset)[0]
    return load_zoo(preset, "vera", base_model=model)


def zoo_numbers(preset=None, vera=None) -> dict:
    """Numbers stored to keep every adapter of the zoo: ``{"vera": int, "lora": int | None}`` (None when the zoo
    has no complete LoRA group), by :func:`hydralib.storage.set_params` on the loaded sets."""
    from ..storage import set_params
    from .artifacts import load_zoo, zoo_groups

    preset = _preset(preset)
    vera = vera if vera is not None else load_vera_zoo(preset)
    lora = set_params(load_zoo(preset, "lora")) if zoo_groups(preset).get("lora") else None
    return {"vera": set_params(vera), "lora": lora}


# ----------------------------------------------------------------------------- building each method


def build_vera_method(spec: MethodSpec, aset, values: dict):
    """``(adapter set to evaluate, task -> adapter mapping, numbers stored, extra info)`` for one setting.

    ``aset`` is the VeRA zoo; ``values`` the tuned hyper-parameters (``lam``, ``density``).
    Every random choice is seeded (seed 0), so the same inputs give the same merge.
    """
    from ..merge.vera import merge_vera_dense, merge_vera_vectors, vera_hydraopt
    from ..storage import set_params

    tasks = list(aset.tasks)
    n = len(tasks)
    if spec.family == "individual":
        return aset, {t: t for t in tasks}, set_params(aset), {}
    if spec.family in ("vectors", "dense"):
        weights = [1.0 / n] * n if spec.method in SUMMING else [1.0] * n
        density = values.get("density", 0.5 if "density" in spec.tune else None)
        if spec.family == "vectors":
            merged = merge_vera_vectors(aset, spec.method, weights=weights, lam=values.get("lam", 1.0),
                                        density=density, seed=0, progress=False)
        else:
            merged = merge_vera_dense(aset, spec.method, weights=weights, lam=values.get("lam", 1.0), density=density,
                                      rank=spec.params.get("rank"), seed=0, progress=False)
        return merged.to_adapter_set("merged"), {t: "merged" for t in tasks}, merged.storage, {}
    if spec.family == "vera_hydraopt":
        result = vera_hydraopt(aset, heads=spec.params["heads"], side=spec.params["side"], solver=spec.method,
                               progress=False, device="cpu")
        info = {"heads": result.n_heads, "loss": result.total_loss, "floor": result.total_floor,
                "energy": result.total_energy, "relative_loss": result.relative_loss,
                "relative_floor": result.relative_floor, "task_to_head": result.task_to_head,
                "steps": int(sum(result.summary()["steps"].values()))}
        return result.to_adapter_set("task"), {t: t for t in tasks}, result.storage, info
    raise ValueError(f"hydralib.suite.vera_frontier: unknown family {spec.family!r}")


def vera_inputs_hash(directories: Sequence[Path], specs: Sequence[MethodSpec], n_eval: int, n_tune: int,
                     preset_name: str) -> str:
    """:func:`~hydralib.suite.frontier.inputs_hash` of the VeRA weight files, the method list and the sample sizes
    (tagged with :data:`VERA_FRONTIER_VERSION`), combined with the sha256 of every adapter's
    ``adapter_config.json`` (its ``r`` and ``projection_prng_key`` decide the projections)."""
    from ..manifest import sha256
    from ..peft_io import CONFIG_NAME

    digest = hashlib.sha256(inputs_hash(directories, specs, n_eval, n_tune,
                                        f"{preset_name}/vera-frontier/{VERA_FRONTIER_VERSION}").encode())
    for d in directories:
        digest.update(sha256(Path(d) / CONFIG_NAME).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- running


def run_vera_frontier(preset=None, specs: Sequence[MethodSpec] | None = None, n_eval: int = 50, n_tune: int = 16,
                      model_and_tokenizer=None, progress: bool = True, shard: tuple[int, int] | None = None,
                      claims: Path | None = None) -> dict:
    """Tune and score every method of ``specs`` (default :func:`default_vera_methods`) on a preset's VeRA zoo.

    Tuning (``lam``, then ``density``) is :func:`~hydralib.suite.frontier.tune` on the first ``n_tune``
    validation examples of every task; scoring is exact match on the first ``n_eval`` test examples.
    ``shard=(i, n)`` runs only ``specs[i::n]`` and returns their rows (``"partial": True``); with ``claims`` (a
    directory shared by the shards) each shard takes the methods it claims first instead. Every finished
    method's row is kept in ``results/vera-frontier-rows/`` keyed by a hash of its inputs, and reused;
    the base model is loaded only when some row is missing.
    """
    from .artifacts import results_path, zoo_dir
    from .models import load_base_model
    from .tasks import preset_task

    preset = _preset(preset)
    model_state = list(model_and_tokenizer) if model_and_tokenizer else []
    aset = load_vera_zoo(preset, model=model_state[0] if model_state else None)
    tasks = list(aset.tasks)
    directories = [zoo_dir(preset) / "adapters" / "vera" / t for t in tasks]
    specs = list(specs or default_vera_methods(preset))
    cdt = preset.compute_dtype
    start = time.perf_counter()
    splits: dict = {}

    def examples(kind: str, n: int) -> dict:
        for t in tasks:
            if t not in splits:
                splits[t] = preset_task(preset, t)
        return {t: getattr(splits[t], kind)[:n] for t in tasks}

    def scored(eval_set, mapping, kind: str, n: int) -> dict:
        if not model_state:
            model_state.extend(load_base_model(preset))
        return score(model_state[0], model_state[1], examples(kind, n), eval_set, mapping, cdt)

    todo = specs if shard is None or claims is not None else specs[shard[0]::shard[1]]
    rows = method_rows(
        todo, results_path(preset, "vera-frontier-rows").with_suffix(""),
        row_key=lambda spec: vera_inputs_hash(directories, [spec], n_eval, n_tune, preset.name),
        build=lambda spec, values: build_vera_method(spec, aset, values),
        score_on=lambda split, eval_set, mapping: scored(eval_set, mapping, split,
                                                         n_tune if split == "validation" else n_eval),
        progress=progress, desc="VeRA frontier", claims=claims)
    result = {"hash": vera_inputs_hash(directories, specs, n_eval, n_tune, preset.name), "preset": preset.name,
              "kind": "vera", "n_eval": n_eval, "n_tune": n_tune, "tasks": tasks, "compute_dtype": cdt,
              "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - start, "rows": rows}
    if shard is not None:
        return {**result, "partial": True}
    out = finish([result], specs)
    numbers = zoo_numbers(preset, aset)
    out.update({"bytes_per_number": BYTES_PER_NUMBER, "vera_rank": int(aset.rank(tasks[0], aset.modules[0])),
                "lora_rank": preset.lora_rank, "vera_stored": numbers["vera"],
                "vera_bytes_fp16": BYTES_PER_NUMBER * numbers["vera"], "lora_stored": numbers["lora"],
                "lora_bytes_fp16": None if numbers["lora"] is None else BYTES_PER_NUMBER * numbers["lora"]})
    for row in out["rows"]:
        row["bytes_fp16"] = BYTES_PER_NUMBER * row["stored"]
        row["relative_to_lora"] = row["stored"] / numbers["lora"] if numbers["lora"] else None
    return out


def _run_sharded(preset, n_eval: int, n_tune: int, workers: int) -> dict:
    """Run the methods in ``workers`` processes (``python -m hydralib.suite.vera_frontier --shard i/n``, each
    ``cpu_count // workers`` torch threads; a free worker takes the next unclaimed method); they leave their rows
    in the row cache, which this process then reads."""
    import os
    import subprocess
    import sys
    import tempfile

    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, "-m", "hydralib.suite.vera_frontier", "--preset", preset.name,
                                   "--n-eval", str(n_eval), "--n-tune", str(n_tune), "--shard", f"{i}/{workers}",
                                   "--claims", tmp], env={**os.environ, "OMP_NUM_THREADS": str(threads)})
                 for i in range(workers)]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"hydralib.suite.vera_frontier: shard workers failed with exit codes {codes}")
    result = run_vera_frontier(preset, n_eval=n_eval, n_tune=n_tune, progress=False)
    result["workers"] = workers
    return result


def vera_frontier_results(preset=None, n_eval: int = 50, n_tune: int = 16, recompute: bool = False,
                          workers: int = 1, progress: bool = True, stored_only: bool = False) -> dict | None:
    """The VeRA frontier of a preset: the stored ``results/vera-frontier.json`` when its input hash matches, else
    recomputed (and stored), in ``workers`` processes. As :func:`~hydralib.suite.frontier.frontier_results`.

    ``stored_only``: return None instead of recomputing (also when the zoo has no VeRA adapters).
    ``progress``: tqdm bars on stderr while recomputing (off in chapters).
    """
    from ..atomic import atomic_file
    from ..errors import HydraError
    from .artifacts import ensure_zoo, results_path, zoo_dir, zoo_groups

    preset = _preset(preset)
    ensure_zoo(preset, results=False)
    present = zoo_groups(preset).get("vera", [])
    if not present:
        if stored_only:
            return None
        raise HydraError(f"hydralib.suite.vera_frontier: the {preset.name!r} zoo under {zoo_dir(preset) / 'adapters'} "
                         "has no VeRA adapters yet; train them with `python -m hydralib.suite.zoo --kinds vera` "
                         "(see `make zoo`)")
    path = results_path(preset, "vera-frontier")
    specs = default_vera_methods(preset)
    directories = [zoo_dir(preset) / "adapters" / "vera" / t for t in present]  # complete adapters, as load_zoo reads
    expected = vera_inputs_hash(directories, specs, n_eval, n_tune, preset.name)
    if path.is_file() and not recompute:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("hash") == expected:
            return stored
    if stored_only:
        return None
    if workers > 1:
        result = _run_sharded(preset, n_eval, n_tune, workers)
    else:
        result = run_vera_frontier(preset, specs, n_eval=n_eval, n_tune=n_tune, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


# ----------------------------------------------------------------------------- reading the result (for the chapter)


def kind_of(row: dict) -> str:
    """How a VeRA HydraOpt row groups tasks into heads: ``"1"``, ``"application"``, ``"language"`` or ``"task"``."""
    heads = row["params"]["heads"]
    return "1" if heads == 1 else str(heads)


def vera_label(row: dict) -> str:
    """Display name of a VeRA frontier row: ``VeRA TIES``, ``VeRA HydraOpt, shared λ_d', 5 heads (application)``."""
    if row["family"] != "vera_hydraopt":
        return LABELS.get(row["name"], row["name"])
    k, kind = row.get("heads", row["params"]["heads"]), kind_of(row)
    heads = "1 head" if kind == "1" else f"{k} heads ({kind})"
    return f"VeRA HydraOpt, shared λ_{row['params']['side']}', {heads}"


def advantage(rows: Sequence[dict], hydra_families: Sequence[str], merge_families: Sequence[str], key: str) -> dict:
    """HydraOpt against the one-adapter merges of one frontier, on ``row[key]``.

    ``best_merge``: the best merge (:func:`~hydralib.suite.frontier_report.best`); ``beat``: the cheapest
    HydraOpt row scoring strictly above it, or None; ``multiple``: its relative storage over the merge's;
    ``best_hydra``: the best HydraOpt row. Every value is read from the rows.
    """
    from .frontier_report import best, cheapest_reaching

    hydra = [r for r in rows if r["family"] in hydra_families]
    merges = [r for r in rows if r["family"] in merge_families]
    bm = best(merges, key)
    beat = cheapest_reaching(hydra, key, bm[key], strictly=True) if bm else None
    return {"best_merge": bm, "beat": beat, "best_hydra": best(hydra, key),
            "multiple": beat["relative_storage"] / bm["relative_storage"] if beat else None, "key": key}


def _advantage_phrase(adv: dict, label, what: str) -> str:
    from .frontier_report import num

    bm, beat = adv["best_merge"], adv["beat"]
    if bm is None:
        return f"on {what} no merge has a defined score"
    if beat is None:
        return (f"on {what} no HydraOpt setting scores above the best one-adapter merge, {label(bm)} "
                f"({num(bm[adv['key']])})")
    return (f"on {what} {label(beat)} scores {num(beat[adv['key']])}, above the best one-adapter merge, "
            f"{label(bm)} ({num(bm[adv['key']])}), at {adv['multiple']:.1f} times its storage")


def carry_over(lora: dict | None, vera: dict, lora_label=None) -> dict:
    """Does HydraOpt's advantage over the one-adapter merges on LoRA carry over to VeRA?

    ``lora`` / ``vera``: :func:`advantage` of each frontier (``lora`` None when the LoRA frontier is not
    available). Returns ``{"verdict": "yes" | "no" | "not tested" | ..., "sentence": Markdown}``, both
    computed from the rows: "yes" when HydraOpt beats the best merge on both, "no" when it does on LoRA
    but not on VeRA, "no advantage to carry" when it does not on LoRA.
    """
    from .frontier_report import label as lora_row_label

    lora_label = lora_label or lora_row_label
    on_vera = _advantage_phrase(vera, vera_label, "VeRA")
    if lora is None:
        return {"verdict": "not tested",
                "sentence": f"The LoRA frontier is not available for this preset, so only VeRA is read: {on_vera}."}
    on_lora = _advantage_phrase(lora, lora_label, "LoRA")
    lora_wins, vera_wins = lora["beat"] is not None, vera["beat"] is not None
    if lora_wins and vera_wins:
        verdict, lead = "yes", "Yes, it carries over"
    elif lora_wins:
        verdict, lead = "no", "No, it does not carry over"
    elif vera_wins:
        verdict, lead = "VeRA only", "HydraOpt beats the merges on VeRA but not on LoRA"
    else:
        verdict, lead = "no advantage to carry", "There is no advantage to carry over here"
    return {"verdict": verdict, "sentence": f"{lead}: {on_lora}; {on_vera}."}


def joint_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Pareto front (:func:`~hydralib.suite.frontier.pareto_front`) of ``(bytes, performance)`` points, among the
    finite ones; indices into ``points``, sorted by bytes."""
    idx = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    return [idx[j] for j in pareto_front([points[i] for i in idx])]


_VECTOR_MARKERS = {"task_arithmetic": "X", "ties": "P", "dare_linear": "D", "dare_ties": "v"}


def plot_bytes_frontier(ax, vera_rows: Sequence[dict], lora_rows: Sequence[dict] | None, key: str,
                        front: Sequence[tuple[float, float]] = ()):
    """fp16 bytes (log x) against ``row[key]`` for the VeRA rows (coloured: HydraOpt by heads, circle = λ_d shared,
    square = λ_b shared; black markers: merges on the vectors; star: the individual adapters; diamond: the dW
    reference) and, when given, the LoRA frontier's rows (light grey; triangle = individual LoRAs). ``front``:
    the ``(bytes, value)`` points of the joint Pareto front, drawn as a dashed step line. Returns ``ax``."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    from .frontier_report import finite

    palette = sns.color_palette("colorblind", 10)
    colours = dict(zip(("1", "application", "language", "task"), [palette[i] for i in (0, 1, 2, 5)]))
    handles = []
    if lora_rows:
        pts = [(r["bytes_fp16"], r[key]) for r in lora_rows if finite(r.get(key)) and r["family"] != "individual"]
        if pts:
            ax.scatter(*zip(*pts), s=25, marker="o", color="0.75", edgecolor="0.5", linewidth=0.4, zorder=2)
            handles.append(Line2D([], [], marker="o", linestyle="", color="0.75", markeredgecolor="0.5",
                                  label="LoRA frontier (merges, HydraOpt)"))
        own = next((r for r in lora_rows if r["family"] == "individual" and finite(r.get(key))), None)
        if own:
            ax.scatter(own["bytes_fp16"], own[key], s=110, marker="^", color="0.45", zorder=3)
            handles.append(Line2D([], [], marker="^", linestyle="", color="0.45", markersize=9,
                                  label="individual LoRAs"))
    for r in vera_rows:
        x, y = r["bytes_fp16"], r[key]
        if not finite(y):
            continue
        if r["family"] == "vera_hydraopt":
            ax.scatter(x, y, s=55, marker="o" if r["params"]["side"] == "d" else "s", color=colours[kind_of(r)],
                       edgecolor="black", linewidth=0.5, alpha=0.9, zorder=4)
        elif r["family"] == "individual":
            ax.scatter(x, y, s=200, marker="*", color="black", zorder=5)
            handles.append(Line2D([], [], marker="*", linestyle="", color="black", markersize=12, label=vera_label(r)))
        elif r["family"] == "dense":
            ax.scatter(x, y, s=70, marker="d", facecolor="none", edgecolor="black", linewidth=1.2, zorder=4)
            handles.append(Line2D([], [], marker="d", linestyle="", markerfacecolor="none", markeredgecolor="black",
                                  color="black", markersize=8, label=vera_label(r)))
        else:
            marker = _VECTOR_MARKERS.get(r["name"], "x")
            ax.scatter(x, y, s=70, marker=marker, color="0.15", zorder=4)
            handles.append(Line2D([], [], marker=marker, linestyle="", color="0.15", markersize=8, label=vera_label(r)))
    pts = sorted(front)
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="0.3", linestyle="--", linewidth=1,
                zorder=1)
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="Pareto front (both)"))
    handles += [Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", markersize=7,
                       label=f"VeRA HydraOpt, heads: {k}") for k, c in colours.items()]
    handles += [Line2D([], [], marker=m, linestyle="", color="white", markeredgecolor="black", markersize=7, label=t)
                for m, t in (("o", "λ_d shared (circle)"), ("s", "λ_b shared (square)"))]
    ax.set_xscale("log")
    ax.set_xlabel("bytes stored in half precision (log scale)")
    ax.set_ylabel({"relative": "relative performance", "exact_match": "mean test exact match"}[key])
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return ax


# ----------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    """``python -m hydralib.suite.vera_frontier [--preset P] [--recompute] [--workers W]``: compute (or load) and
    print the VeRA frontier."""
    import argparse
    import os
    import sys

    from ..errors import HydraError

    p = argparse.ArgumentParser(prog="python -m hydralib.suite.vera_frontier", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None)
    p.add_argument("--n-eval", type=int, default=50)
    p.add_argument("--n-tune", type=int, default=16)
    p.add_argument("--recompute", action="store_true", help="recompute even when the stored hash matches")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each cpu_count/workers threads)")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.shard:
            i, n = (int(x) for x in args.shard.split("/"))
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
            run_vera_frontier(args.preset, n_eval=args.n_eval, n_tune=args.n_tune, shard=(i, n), progress=False,
                              claims=Path(args.claims) if args.claims else None)
            return 0
        result = vera_frontier_results(args.preset, n_eval=args.n_eval, n_tune=args.n_tune, recompute=args.recompute,
                                       workers=args.workers)
    except HydraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for row in result["rows"]:
        print(f"{row['name']:32s} {row['bytes_fp16']:>10,d} B  storage {row['relative_storage']:7.3f}  "
              f"exact match {row['exact_match']:.3f}  relative {row['relative']:.3f}  tuned {row['tuned']}")
    if result.get("lora_bytes_fp16"):
        print(f"all VeRA adapters: {result['vera_bytes_fp16']:,d} B; "
              f"all LoRA adapters: {result['lora_bytes_fp16']:,d} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
