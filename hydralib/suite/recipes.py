"""When does sharing A work? The training-recipe sub-zoos (LoRA+, LoRA-FA) and what they do to lora_A.

``python -m hydralib.suite.recipes train`` trains, resumably, a LoRA for every task
of ``preset.recipe_applications`` under each recipe of
:data:`~hydralib.suite.training.RECIPES` other than ``standard`` (whose adapters are
the zoo's own ``lora`` group), into ``<zoo>/adapters/<recipe>/``, with the zoo's
data, steps, rank, batch, seed and schedule. Only the optimiser differs.

``python -m hydralib.suite.recipes measure`` then measures, for every recipe
(``standard`` on the same tasks from the zoo), on the first ``n_eval`` test
examples of each task:

* own-task exact match (per example, for the bootstrap of :mod:`hydralib.stats`);
* how far lora_A moved: ``||A - A0|| / ||A0||`` with A0 regenerated from the
  seed (:func:`~hydralib.analysis.peft_initial_lora_a`);
* chance-corrected subspace overlap of A and of B between tasks;
* HydraOpt, side A, heads task, application and 1, each at r' = r and r/2, and
  int4 per adapter: relative loss, bytes and relative performance against the
  recipe's own adapters.

Results: ``results/recipes.json`` keyed by a hash of the adapter files and settings.
Each (recipe, point) row is cached under ``results/recipes-rows/`` and keyed by its own
recipe's adapter files, the point and ``n_eval`` (:func:`row_key`), so adding a recipe
or a point measures only what is new; rows of the stored result are reused the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

DEFAULT_RECIPES = ("loraplus", "lorafa")
# the recipes the chapter reads (the committed default results measure these)
BOOK_RECIPES = ("standard", "loraplus", "lorafa")
TRAIN_COMMAND = "python -m hydralib.suite.recipes train"


def train_recipes(preset=None, recipes=DEFAULT_RECIPES, root: str | Path | None = None, worker: tuple[int, int] | None = None,
                  progress: bool = True) -> list[Path]:
    """Train the missing adapters of the recipe sub-zoos (``worker=(i, n)``: every n-th job from i)."""
    from ..presets import get_preset
    from .artifacts import zoo_dir
    from .training import recipe_jobs, train_sub_zoo

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    root = Path(root) if root is not None else zoo_dir(preset) / "adapters"
    return train_sub_zoo(preset, recipe_jobs(preset, recipes), root, worker, progress, TRAIN_COMMAND)


VERSION = 1


def recipe_adapters(preset, recipe: str):
    """The adapters of one recipe's sub-zoo as an :class:`~hydralib.adapters.AdapterSet` with task metadata
    (``standard``: the zoo's ``lora`` adapters of the same tasks)."""
    from ..adapters import load_adapters
    from .artifacts import load_zoo, task_metadata, zoo_dir
    from .training import RECORD_NAME, is_complete, recipe_jobs

    tasks = [j.task for j in recipe_jobs(preset, ("loraplus",))]
    if recipe == "standard":
        return load_zoo(preset, "lora", tasks=tasks)
    root = zoo_dir(preset) / "adapters" / recipe
    missing = [t for t in tasks if not is_complete(root / t)]
    if missing:
        from ..errors import HydraError

        raise HydraError(f"hydralib.suite.recipes: {root} lacks {missing[:3]} (train with `{TRAIN_COMMAND}`)")
    metadata = {t: task_metadata(t, seed=int(json.loads((root / t / RECORD_NAME).read_text())["seed"]), group=recipe)
                for t in tasks}
    return load_adapters([root / t for t in tasks], tasks=tasks, metadata=metadata)


def recipe_points(preset) -> list[tuple[str, dict]]:
    """``(name, params)`` of the points scored per recipe: the adapters, HydraOpt settings, int4."""
    r = preset.lora_rank
    points = [("individual", {})]
    for heads in ("task", "application", 1):
        for rank in (r, max(1, r // 2)):
            points.append((f"hydraopt-{heads}-r{rank}", {"heads": heads, "rank": rank}))
    points.append(("int4", {"codec": "int4"}))
    return points


def _directories(preset, recipe: str, tasks):
    from .artifacts import zoo_dir

    return [zoo_dir(preset) / "adapters" / ("lora" if recipe == "standard" else recipe) / t for t in tasks]


def _files_digest(preset, recipe: str) -> str:
    """sha256 over one recipe's adapter weight files (the tasks of the sub-zoo, in order)."""
    import hashlib

    from ..manifest import sha256
    from ..peft_io import WEIGHTS_NAME
    from .training import recipe_jobs

    tasks = [j.task for j in recipe_jobs(preset, ("loraplus",))]
    digest = hashlib.sha256()
    for d in _directories(preset, recipe, tasks):
        digest.update(f"{recipe}/{d.name}/{sha256(d / WEIGHTS_NAME)}".encode())
    return digest.hexdigest()


def _hash(preset, recipes, n_eval) -> str:
    import hashlib

    digest = hashlib.sha256(f"{VERSION}/{preset.name}/{n_eval}/{recipe_points(preset)}".encode())
    for recipe in recipes:
        digest.update(_files_digest(preset, recipe).encode())
    return digest.hexdigest()


def row_key(preset, recipe: str, name: str, params: dict | None, n_eval: int, files: str | None = None) -> str:
    """The key of one (recipe, point) row: the recipe's adapter files, the point and ``n_eval``."""
    import hashlib

    files = files or _files_digest(preset, recipe)
    return hashlib.sha256(f"{VERSION}/{preset.name}/{n_eval}/{recipe}/{name}/{params}/{files}".encode()).hexdigest()[:16]


def _point_row(preset, recipe, name, params, aset, model, tokenizer, pairs):
    from ..compress import adapter_file_bytes, from_hydraopt, quantize, relative_loss
    from ..merge import hydraopt
    from .storage_frontier import score_examples

    t0 = time.perf_counter()
    if name == "individual":
        cset = quantize(aset, "fp16")
    elif "codec" in params:
        cset = quantize(aset, params["codec"])
    else:
        cset = from_hydraopt(hydraopt(aset, heads=params["heads"], rank=params["rank"], side="A", progress=False))
    nbytes = cset.nbytes()
    ref = adapter_file_bytes(_directories(preset, recipe, aset.tasks))
    scores = score_examples(model, tokenizer, pairs, cset.to_adapter_set(), preset.compute_dtype)
    return {"recipe": recipe, "name": name, "params": params, "bytes": nbytes, "relative_bytes": nbytes / ref,
            "relative_loss": relative_loss(cset, aset), "scores": scores, "seconds": time.perf_counter() - t0}


def _structure(preset, recipe, aset, model) -> dict:
    """Drift of lora_A from its regenerated initial value, and chance-corrected A / B overlap between tasks."""
    import numpy as np

    from ..analysis import adapter_init_distance, peft_initial_lora_a, summarise_asymmetry
    from .training import peft_config

    seed = int(aset.metadata[aset.tasks[0]]["seed"])
    init = peft_initial_lora_a(model, peft_config(preset, "lora"), seed)
    stored = aset.stored_dtypes.get(aset.tasks[0], torch.float32)  # A0 as the files store it (fp16): frozen = 0
    distances = adapter_init_distance(aset, {m: init[m].to(stored).float() for m in aset.modules})
    per_task = np.mean(np.stack([distances[m] for m in aset.modules]), 0)
    summary = summarise_asymmetry(aset)
    overlap = summary["measures"]["overlap"]
    return {"drift_mean": float(per_task.mean()), "drift_min": float(per_task.min()),
            "drift_max": float(per_task.max()), "drift_by_task": dict(zip(aset.tasks, per_task.tolist())),
            "overlap_a": float(overlap["corrected_a"]["overall"]), "overlap_b": float(overlap["corrected_b"]["overall"]),
            "seed": seed}


def measure_rows(preset=None, recipes=("standard",) + DEFAULT_RECIPES, n_eval: int = 50,
                 claims: Path | None = None, progress: bool = True) -> list[dict]:
    """Every (recipe, point) row, cached one file each under ``results/recipes-rows/`` (resumable; with
    ``claims`` shared by worker processes, each computes the rows it claims first)."""
    from ..presets import get_preset
    from .artifacts import results_path
    from .frontier import claim, save_row, stored_rows
    from .models import load_base_model
    from .tasks import encode_example, preset_task

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    files = {recipe: _files_digest(preset, recipe) for recipe in recipes}
    cache = results_path(preset, "recipes-rows").with_suffix("")
    model = tokenizer = pairs = None
    rows = []
    jobs = [(recipe, "structure", None) for recipe in recipes]
    jobs += [(recipe, name, params) for recipe in recipes for name, params in recipe_points(preset)]
    keys = {(recipe, name): row_key(preset, recipe, name, params, n_eval, files[recipe]) for recipe, name, params in jobs}
    stored = stored_rows(results_path(preset, "recipes"), set(keys.values()), "recipes")
    for recipe, name, params in tqdm(jobs, desc="recipes", disable=not progress):
        key = keys[recipe, name]
        row_file = cache / f"{recipe}-{name}-{key}.json"
        if row_file.is_file() or key in stored:
            rows.append(stored[key] if key in stored else json.loads(row_file.read_text(encoding="utf-8")))
            continue
        if not claim(claims, row_file.stem):
            continue
        if model is None:
            model, tokenizer = load_base_model(preset)
        aset = recipe_adapters(preset, recipe)
        if name == "structure":
            row = {"recipe": recipe, "name": name, **_structure(preset, recipe, aset, model)}
        else:
            if pairs is None:
                pairs = {t: [encode_example(e, tokenizer) for e in preset_task(preset, t).test[:n_eval]]
                         for t in aset.tasks}
            row = _point_row(preset, recipe, name, params, aset, model, tokenizer, pairs)
        row["key"] = key
        rows.append(save_row(row_file, row))
    return rows


def recipe_results(preset=None, recipes=("standard",) + DEFAULT_RECIPES, n_eval: int = 50, workers: int = 1,
                   recompute: bool = False, stored_only: bool = False, progress: bool = True) -> dict | None:
    """``results/recipes.json`` when its hash matches; else measured (in ``workers`` processes) and stored.

    Per recipe: the structure row (drift, overlaps), the training CPU seconds from the records, and every
    point with :func:`hydralib.stats.summarise`'s relative performance and interval (reference: the recipe's
    own adapters)."""
    from ..presets import get_preset
    from ..stats import summarise
    from .artifacts import ensure_zoo, results_path
    from .frontier import run_claiming_workers, stored_result, write_result
    from .training import RECORD_NAME, is_complete, recipe_jobs

    preset = preset if hasattr(preset, "tasks") else get_preset(preset)
    ensure_zoo(preset, kinds=("lora",), results=False)
    path = results_path(preset, "recipes")
    tasks = [j.task for j in recipe_jobs(preset, ("loraplus",))]
    complete = all(is_complete(d) for r in recipes for d in _directories(preset, r, tasks))
    if stored_only and not complete:
        return None
    if not complete and preset.name != "default":  # other presets train their recipe adapters here (tiny: seconds)
        train_recipes(preset, tuple(r for r in recipes if r != "standard"), progress=False)
    expected = _hash(preset, recipes, n_eval)
    stored = stored_result(path, expected)
    if stored is not None and not recompute:
        return stored
    if stored_only:
        return None
    if workers > 1:
        run_claiming_workers(["hydralib.suite.recipes", "measure", "--preset", preset.name, "--n-eval", str(n_eval),
                              "--recipes", ",".join(recipes)], workers, "hydralib.suite.recipes")
    rows = measure_rows(preset, recipes, n_eval, progress=progress)
    out = {"hash": expected, "preset": preset.name, "n_eval": n_eval, "recipes": {}}
    for recipe in recipes:
        mine = [r for r in rows if r["recipe"] == recipe]
        points = [r for r in mine if r["name"] != "structure"]
        aset_tasks = list(points[0]["scores"])
        records = [json.loads((d / RECORD_NAME).read_text()) for d in _directories(preset, recipe, aset_tasks)]
        out["recipes"][recipe] = {
            "structure": next(r for r in mine if r["name"] == "structure"),
            "training_seconds": sum(r["seconds"] for r in records),  # wall seconds as recorded
            "recipe": records[0].get("recipe", {"name": "standard"}),
            "points": points, "stats": summarise(points)}
    write_result(path, out)
    return out


def main(argv=None) -> int:
    from .frontier import sub_zoo_args

    args, worker, recipes = sub_zoo_args("python -m hydralib.suite.recipes", __doc__.splitlines()[0], "recipes",
                                         DEFAULT_RECIPES, argv)
    if args.action == "train":
        train_recipes(args.preset, recipes, worker=worker)
        return 0
    if args.claims:
        measure_rows(args.preset, recipes, args.n_eval, claims=Path(args.claims), progress=False)
        return 0
    result = recipe_results(args.preset, recipes, args.n_eval, workers=args.workers, recompute=args.recompute)
    for recipe, r in result["recipes"].items():
        st = r["structure"]
        print(f"{recipe:10s} drift {st['drift_mean']:.3f}  overlap A {st['overlap_a']:.3f} B {st['overlap_b']:.3f}")
        for point in r["points"]:
            m = r["stats"]["methods"][point["name"]]
            print(f"   {point['name']:24s} bytes {point['relative_bytes']:.3f} loss {point['relative_loss']:.4f} "
                  f"relative {m['relative']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]  EM {m['exact_match']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
