"""The initialisation control: how far each lora_A moved from PEFT's initial A, and similarity split by seed.

PEFT initialises lora_A with kaiming-uniform from the global torch seed, so
adapters trained with the same seed start from the same A.
:func:`init_distance` / :func:`adapter_init_distance` measure
``||A_i - A_i^0||_F / ||A_i^0||_F`` (acts on the A factor);
:func:`peft_initial_lora_a` recomputes A^0 for a seed with peft itself;
:func:`seed_control` / :func:`adapter_seed_control` split A-side and B-side
similarity by same / different seed and same / different task. (Part of
:mod:`hydralib.analysis.structure`, which re-exports every name here.)
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch

from .core import as_adapter_set, task_metadata, to_jsonable
from .groups import _require, _square, _stats, seed_masks, task_identity

#: The similarity measures of the asymmetry verdict: measure -> (A-side kind, B-side kind, chance-corrected?).
_MEASURES = {
    "cosine": ("cosine_a", "cosine_b", False),
    "overlap": ("overlap_a", "overlap_b", True),
    "cka": ("cka_a", "cka_b", True),
}


# --------------------------------------------------------------------------- initialisation control


def init_distance(lora_a, init_a) -> np.ndarray | float:
    """Relative distance from initialisation ``||A - A0||_F / ||A0||_F`` (acts on the A factor).

    ``lora_a``: ``(r, d_in)`` or a batch ``(N, r, d_in)``; ``init_a``: ``(r, d_in)``
    (broadcast) or ``(N, r, d_in)``. Returns a float or ``(N,)``.
    """
    a = torch.as_tensor(lora_a).detach().to(torch.float64)
    a0 = torch.as_tensor(init_a).detach().to(torch.float64)
    if a.shape[-2:] != a0.shape[-2:]:
        raise ValueError(
            f"hydralib.analysis.structure: lora_a {tuple(a.shape)} and its initialisation {tuple(a0.shape)} disagree"
        )
    diff = (a - a0).flatten(-2).norm(dim=-1)
    ref = a0.flatten(-2).norm(dim=-1)
    out = (diff / ref).cpu().numpy()
    return float(out) if out.ndim == 0 else out


def adapter_init_distance(
    adapters,
    init_a: Mapping,
    by_seed: bool = False,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """``{module: (N,)}`` relative distances ``||A_i - A_i^0||_F / ||A_i^0||_F`` of an adapter set.

    ``init_a``: ``{module: A0 (r, d_in)}`` shared by all tasks, or with
    ``by_seed=True`` ``{seed: {module: A0}}`` picked by each task's
    ``metadata['seed']`` (e.g. from :func:`peft_initial_lora_a`).
    Aggregate with :func:`~hydralib.analysis.core.aggregate`.
    """
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    modules = list(adapters.modules if modules is None else modules)
    meta = task_metadata(adapters, tasks)
    if by_seed:
        _require(meta, ("seed",), tasks)
    out = {}
    for module in modules:
        values = []
        for task, m in zip(tasks, meta):
            source = init_a[m["seed"]] if by_seed else init_a
            if module not in source:
                raise ValueError(f"hydralib.analysis.structure: no initial lora_a for module {module!r}"
                                 + (f" and seed {m['seed']}" if by_seed else ""))
            a, _, _ = adapters.factors(task, module)
            if tuple(a.shape) != tuple(source[module].shape):
                raise ValueError(
                    f"hydralib.analysis.structure: module {module!r}, task {task!r}: lora_a {tuple(a.shape)} "
                    f"but initial lora_a {tuple(source[module].shape)}"
                )
            values.append(init_distance(a, source[module]))
        out[module] = np.asarray(values, dtype=float)
    return out


def _target_shapes(model: torch.nn.Module, lora_config) -> dict[str, tuple[int, int]]:
    from peft.tuners.tuners_utils import check_target_module_exists

    from ..adapters import linear_shapes

    return {name: shape for name, shape in linear_shapes(model).items()
            if name and check_target_module_exists(lora_config, name)}


def _skeleton(shapes: Mapping[str, tuple[int, int]]) -> torch.nn.Module:
    """A module tree with uninitialised ``nn.Linear`` leaves at the given names, in the given order (no RNG use)."""
    root = torch.nn.Module()
    for name, (d_out, d_in) in shapes.items():
        parent = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        leaf = torch.nn.Linear(d_in, d_out, bias=False, device="meta").to_empty(device="cpu")
        parent.add_module(parts[-1], leaf)
    return root


def peft_initial_lora_a(model_or_shapes, lora_config, seed: int, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The lora_A that peft draws for ``seed``: ``{module: A0 (r, d_in)}``.

    Recomputed with peft itself: a skeleton with linear layers of the target
    shapes, in the base model's module order, gets ``lora_config`` injected right
    after ``torch.manual_seed(seed)`` (the caller's RNG state is restored).
    This reproduces the training run's initial A exactly when training called
    ``torch.manual_seed(seed)`` (or ``transformers.set_seed``) immediately before
    ``get_peft_model`` and the LoRA layers were built on CPU, which is the
    default. ``model_or_shapes``: the base model (only its target modules' shapes
    and order are used; it is not modified) or an ordered ``{module: (d_out, d_in)}``
    in the base model's ``named_modules`` order (order matters: each layer
    consumes random numbers).
    """
    from peft import inject_adapter_in_model

    config = copy.deepcopy(lora_config)
    if isinstance(model_or_shapes, torch.nn.Module):
        shapes = _target_shapes(model_or_shapes, config)
    else:
        shapes = dict(model_or_shapes)
    if not shapes:
        raise ValueError("hydralib.analysis.structure: no target modules of the LoRA config found in the model")
    if getattr(config, "fan_in_fan_out", False):
        config.fan_in_fan_out = False  # the skeleton uses nn.Linear; lora_A's shape (r, d_in) is the same
    skeleton = _skeleton(shapes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, skeleton, adapter_name=adapter_name)
    out = {}
    for name in shapes:
        layer = skeleton.get_submodule(name)
        out[name] = layer.lora_A[adapter_name].weight.detach().clone()
    return out


def seed_control(
    similarities: Mapping[str, np.ndarray],
    metadata: Sequence[Mapping],
    tasks: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Split similarity by seed and task: the initialisation control.

    ``similarities``: ``{name: (N, N)}``, e.g. ``{"a": A-side, "b": B-side}``.
    ``metadata``: needs ``seed``; the task identity is ``(application, language)``
    or ``task`` (see :func:`task_identity`). Returns for every name the cells
    ``{"same_seed" | "different_seed": {"same_task" | "different_task": {mean, std, n_pairs}}}``.
    If A-side similarity between different tasks is high with the same seed and
    drops to chance with different seeds, it came from the shared initial A.
    """
    masks = seed_masks(metadata)
    ident = [task_identity(m, tasks[i] if tasks is not None else str(i)) for i, m in enumerate(metadata)]
    same_task = np.array([[x == y for y in ident] for x in ident], dtype=bool)
    out = {}
    for name, sim in similarities.items():
        m = _square(sim, len(metadata), where=f"similarity {name!r}")
        out[name] = {
            seed_key: {
                "same_task": _stats(m, mask & same_task),
                "different_task": _stats(m, mask & ~same_task),
            }
            for seed_key, mask in masks.items()
        }
    return out


def adapter_seed_control(
    adapters,
    seeds: Sequence[int] | None = None,
    similarity=None,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    num_threads: int | None = 1,
) -> dict:
    """The initialisation control on adapter sets: A-side vs B-side similarity by same / different seed.

    ``adapters``: one adapter set whose tasks carry ``metadata['seed']``, or a
    list of sets (e.g. the zoo and its control sets), combined with
    :func:`~hydralib.analysis.core.combine_adapter_sets` (``seeds[k]`` for set k).
    ``similarity``: a precomputed result for the (combined) set.
    Returns ``{measure: {"overall": cells, "by_projection": {p: cells}}}`` for
    measure in cosine / overlap / cka (chance-corrected for overlap and cka),
    where ``cells = seed_control({"a": ..., "b": ...})`` of the module-averaged
    matrices. JSON-serialisable.
    """
    from .core import combine_adapter_sets
    from .similarity import adapter_similarity

    if isinstance(adapters, (list, tuple)):
        adapters = combine_adapter_sets(adapters, seeds=seeds)
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    meta = task_metadata(adapters, tasks)
    _require(meta, ("seed",), tasks)
    if similarity is None:
        kinds = [k for ka, kb, _ in _MEASURES.values() for k in (ka, kb)]
        kinds += ["chance_" + k for k in kinds if not k.startswith("cosine")]
        similarity = adapter_similarity(adapters, kinds, modules=modules, tasks=tasks, num_threads=num_threads)
    control = {}
    for measure, (ka, kb, corrected) in _MEASURES.items():
        entry = {}
        for key, group in (("overall", "all"), ("by_projection", "projection")):
            ma = similarity.mean_matrix(ka, by=group, corrected=corrected)
            mb = similarity.mean_matrix(kb, by=group, corrected=corrected)
            cells = {g: seed_control({"a": ma[g], "b": mb[g]}, meta, tasks) for g in ma}
            entry[key] = cells["all"] if key == "overall" else cells
        control[measure] = entry
    return to_jsonable(control)
