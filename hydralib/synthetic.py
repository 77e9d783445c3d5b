"""Synthetic adapter sets with known structure: the one generator of the tests, the chapters and the benchmark.

Every draw comes from a generator seeded by the caller's ``seed`` and the
module name (and the part drawn), so a module's factors do not depend on
which other modules are asked for, or in what order, nor on the global torch
RNG. Four models, one per use:

* :func:`random_lora_factors` (the merge tests and examples): each task's
  factors mix components shared by every task, shared by the tasks of one
  group (e.g. an application), and owned by the task,

      A_i = sqrt(shared_a) A_common + sqrt(group_a) A_group(i) + sqrt(1 - shared_a - group_a) A_own(i)

  and the same for B with ``shared_b`` / ``group_b``. ``shared_a > shared_b``
  makes the A matrices more alike across tasks than the B matrices (the
  premise HydraOpt builds on). Entries of A are N(0, 1/d_in) (rows of about
  unit norm) and entries of B are N(0, b_std^2). Module m draws from
  ``torch.Generator().manual_seed(derive_seed(seed, m))``.
* :func:`synthetic_factors` / :func:`synthetic_adapters` (the analysis tests
  and chapter sketches): task i (metadata dict with e.g. ``application``,
  ``language``, ``seed``) gets, at every module of shape ``(d_out, d_in)``,

      A_i = a_init * A0[seed_i] + sum_k a_groups[k] * U_k[meta_i[k]] + a_noise * E_i     (r, d_in)
      B_i =                       sum_k b_groups[k] * V_k[meta_i[k]] + b_noise * F_i     (d_out, r)

  with ``A0[seed]`` PEFT's default lora_A initialisation, kaiming-uniform
  with ``a = sqrt(5)``, i.e. uniform on ``[-1/sqrt(d_in), 1/sqrt(d_in)]``,
  drawn from ``seed`` (so tasks with the same seed share their starting A,
  as with PEFT and one global torch seed); ``U_k[value]``, ``V_k[value]`` a
  Gaussian component shared by all tasks with the same value of metadata key
  k (e.g. every task in French); ``E_i``, ``F_i`` task-specific Gaussian
  noise. Gaussian parts are scaled so that each term has about the same
  Frobenius norm as A0 (A side) or ``1/sqrt(r)`` per column (B side). Draws
  are seeded by ``(seed, module, component)`` (crc32).
* :func:`structured_factors` (the benchmark): :func:`random_lora_factors`
  with the structure of :data:`STRUCTURE` and every task re-expressed in a
  random basis of its rank space (:func:`change_basis`); see below.
* :func:`random_vera_adapters` (the VeRA tests and chapter): VeRA vectors
  mixed the same way, with peft's projections.

Why the benchmark's adapters are structured, and why a change of basis
----------------------------------------------------------------------
On purely random adapters HydraOpt's Adam initialisation (mean lora_a,
group-mean lora_b) is already within about 2 % of the optimum, so "Adam until
within 1 % of the exact loss" would be measured on a problem that is solved
before it starts. The benchmark therefore draws adapters whose tasks share
structure, as trained adapters do:

* ``shared_a`` (default 0.8): 80 % of every A_i is common to all tasks, so the
  row spaces overlap and the exact floor is well below the total energy;
* ``group_b`` (default 0.5): half of every B_i is shared by the tasks of its
  group (an "application"; ``n_groups`` contiguous blocks of tasks);
* ``basis="random"``: each task's factors are re-expressed in a random basis of
  its rank space, ``A_i <- R_i A_i``, ``B_i <- B_i R_i^T`` with R_i a random
  orthogonal ``r x r`` matrix. The update ``dW_i = s_i B_i A_i`` is unchanged
  (so is the exact solution, which depends only on the dW_i), but the factors
  no longer line up entry by entry. Independently trained LoRAs are like that:
  a LoRA is defined only up to an invertible ``r x r`` change of basis. It is
  what makes the iterative solver work: its initial loss is then several times
  the floor instead of within 2 % of it.

Example
-------
>>> factors = random_lora_factors(3, {"layers.0.q_proj": (32, 16)}, rank=4, seed=0, shared_a=0.9)
>>> A, B, s = factors["task0"]["layers.0.q_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((4, 16), (32, 4), 2.0)
>>> tasks, metadata = synthetic_tasks(["qa", "summary"], ["en", "de"])
>>> tasks[1], metadata[tasks[1]]
('qa-de', {'application': 'qa', 'language': 'de'})
>>> shapes = attention_modules(n_layers=2, d_model=32, d_kv=16)
>>> list(shapes.items())[:2]
[('model.layers.0.self_attn.q_proj', (32, 32)), ('model.layers.0.self_attn.k_proj', (16, 32))]
>>> tasks, meta = task_grid(["qa", "reply"], ["en", "fr"])
>>> tasks
['qa-en', 'qa-fr', 'reply-en', 'reply-fr']
>>> f = synthetic_factors(shapes, meta, rank=4, a_groups={"language": 1.0}, b_groups={"application": 1.0})
>>> A, B, s = f["qa-en"]["model.layers.1.self_attn.v_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((4, 32), (16, 4), 4.0)
>>> from hydralib.bench.presets import bench_preset
>>> factors, metadata = structured_factors(bench_preset("smollm2", n_tasks=10, n_layers=1), seed=0)
>>> len(factors), metadata["app0-t00"]
(10, {'application': 'app0'})
>>> A, B, s = factors["app0-t00"]["model.layers.0.self_attn.k_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((8, 576), (192, 8), 2.0)
"""

from __future__ import annotations

import copy
import hashlib
import math
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import torch

__all__ = [
    "derive_seed",
    "synthetic_tasks",
    "task_grid",
    "LLAMA_PROJECTIONS",
    "attention_modules",
    "smollm2_shapes",
    "paper_shapes",
    "random_lora_factors",
    "kaiming_uniform_like",
    "synthetic_factors",
    "synthetic_initial_a",
    "synthetic_adapters",
    "STRUCTURE",
    "task_names",
    "change_basis",
    "structured_factors",
    "write_peft_dirs",
    "random_vera_adapters",
]

_F64 = torch.float64

# ============================================================================= seeds, task names and module shapes


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and any keys (e.g. a module name), stable across runs and platforms."""
    text = ":".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def _generator(*parts) -> torch.Generator:
    """The generator of :func:`synthetic_factors`' draws, seeded by the crc32 of ``parts``."""
    key = zlib.crc32("|".join(str(p) for p in parts).encode())
    return torch.Generator().manual_seed(key)


def synthetic_tasks(applications: Sequence[str], languages: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Task names ``"{application}-{language}"`` (application-major) and their metadata."""
    tasks, metadata = [], {}
    for app in applications:
        for lang in languages:
            task = f"{app}-{lang}"
            tasks.append(task)
            metadata[task] = {"application": app, "language": lang}
    return tasks, metadata


def task_grid(
    applications: Sequence[str],
    languages: Sequence[str],
    seeds: Sequence[int] = (0,),
) -> tuple[list[str], dict[str, dict]]:
    """Tasks ``"{application}-{language}"`` (suffix ``"@s{seed}"`` when several seeds) and their metadata.

    Unlike :func:`synthetic_tasks`, the metadata also carry the task's ``seed``
    (its initial A0 in :func:`synthetic_factors`) and ``task`` (the name
    without the seed suffix), for the seed-control analyses.
    """
    tasks, meta = [], {}
    for seed in seeds:
        for a in applications:
            for lang in languages:
                name = f"{a}-{lang}" if len(seeds) == 1 else f"{a}-{lang}@s{seed}"
                tasks.append(name)
                meta[name] = {"application": a, "language": lang, "seed": int(seed), "task": f"{a}-{lang}"}
    return tasks, meta


LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def attention_modules(
    n_layers: int,
    d_model: int,
    d_kv: int,
    projections: Sequence[str] = LLAMA_PROJECTIONS,
    prefix: str = "model.layers",
) -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` of the attention projections of a Llama-style decoder, in model order.

    q_proj and o_proj are ``(d_model, d_model)``, k_proj and v_proj ``(d_kv, d_model)``.
    E.g. Llama-3.2-1B: ``attention_modules(16, 2048, 512)``; SmolLM2-135M: ``(30, 576, 192)``.
    """
    out_dims = {"q_proj": d_model, "k_proj": d_kv, "v_proj": d_kv, "o_proj": d_model}
    shapes = {}
    for layer in range(n_layers):
        for p in projections:
            if p not in out_dims:
                raise ValueError(f"attention_modules: unknown projection {p!r}; use {list(out_dims)}")
            shapes[f"{prefix}.{layer}.self_attn.{p}"] = (out_dims[p], d_model)
    return shapes


def smollm2_shapes() -> dict[str, tuple[int, int]]:
    """SmolLM2-135M: 30 layers, hidden 576, key/value 192 (q/o 576->576, k/v 576->192)."""
    return attention_modules(30, 576, 192)


def paper_shapes() -> dict[str, tuple[int, int]]:
    """Llama-3.2-1B as in the HydraOpt paper: 16 layers, hidden 2048, key/value 512."""
    return attention_modules(16, 2048, 512)


def _mix(common, group, own, f_common, f_group):
    """``sqrt(f_common) common + sqrt(f_group) group + sqrt(1 - f_common - f_group) own`` (zero terms skipped)."""
    out = (1.0 - f_common - f_group) ** 0.5 * own
    if f_common:
        out = out + f_common**0.5 * common
    if f_group:
        out = out + f_group**0.5 * group
    return out


def _check_groups(where: str, n_tasks: int, groups, fractions, group_args: str) -> list:
    """Group labels per task (all ``0`` when ``groups`` is None), checked with the mixing ``fractions``
    ``((name, common, group), ...)``: each in [0, 1] and summing to at most 1; ``group_args`` names the
    group fractions in the error when they are given without ``groups``."""
    if groups is None:
        if any(f_group for _, _, f_group in fractions):
            raise ValueError(f"{where}: {group_args} need groups=")
        groups = [0] * n_tasks
    groups = list(groups)
    if len(groups) != n_tasks:
        raise ValueError(f"{where}: {len(groups)} group labels for {n_tasks} tasks")
    for name, f_common, f_group in fractions:
        if min(f_common, f_group) < 0 or f_common + f_group > 1:
            raise ValueError(f"{where}: fractions of {name} must be >= 0 and sum to <= 1")
    return groups


# ============================================================================= mixed-component LoRA factors


def random_lora_factors(
    n_tasks: int,
    modules: Mapping[str, tuple[int, int]],
    rank: int,
    seed: int = 0,
    *,
    shared_a: float = 0.0,
    shared_b: float = 0.0,
    groups: Sequence[object] | None = None,
    group_a: float = 0.0,
    group_b: float = 0.0,
    scaling: float = 2.0,
    b_std: float = 0.02,
    task_names: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    """Random LoRA factors ``{task: {module: (A (rank, d_in), B (d_out, rank), scaling)}}``.

    Parameters
    ----------
    n_tasks: number of tasks N.
    modules: ``{module name: (d_out, d_in)}``.
    rank: LoRA rank r of every task.
    seed: base seed; module m uses ``torch.Generator().manual_seed(derive_seed(seed, m))``.
    shared_a, shared_b: fraction of each A (B) that is common to all tasks, in [0, 1].
    groups: optional group label per task (e.g. its application).
    group_a, group_b: fraction of each A (B) shared inside a group (needs ``groups``).
    scaling: s of every task (``lora_alpha / r``).
    b_std: standard deviation of the entries of B's components.
    task_names: names (default ``task0 .. task{N-1}``).
    """
    if task_names is None:
        task_names = [f"task{i}" for i in range(n_tasks)]
    task_names = list(task_names)
    if len(task_names) != n_tasks or len(set(task_names)) != n_tasks:
        raise ValueError(f"random_lora_factors: need {n_tasks} distinct task names, got {task_names}")
    groups = _check_groups("random_lora_factors", n_tasks, groups, (("A", shared_a, group_a), ("B", shared_b, group_b)),
                           "group_a / group_b")
    labels = list(dict.fromkeys(groups))
    out: dict[str, dict] = {t: {} for t in task_names}
    for module in modules:
        d_out, d_in = (int(x) for x in modules[module])
        gen = torch.Generator().manual_seed(derive_seed(seed, module))

        def draw_a():
            return torch.randn(rank, d_in, generator=gen, dtype=_F64) / d_in**0.5

        def draw_b():
            return torch.randn(d_out, rank, generator=gen, dtype=_F64) * b_std

        common_a, common_b = draw_a(), draw_b()
        group_parts = {label: (draw_a(), draw_b()) for label in labels}
        for task, label in zip(task_names, groups):
            own_a, own_b = draw_a(), draw_b()
            ga, gb = group_parts[label]
            A = _mix(common_a, ga, own_a, shared_a, group_a).to(dtype)
            B = _mix(common_b, gb, own_b, shared_b, group_b).to(dtype)
            out[task][module] = (A, B, float(scaling))
    return out


# ============================================================================= PEFT-initialised factors with metadata groups


def kaiming_uniform_like(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """PEFT's default lora_A init: ``kaiming_uniform_(a=sqrt(5))`` = uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``."""
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def synthetic_factors(
    shapes: Mapping[str, tuple[int, int]],
    metadata: Mapping[str, Mapping],
    rank: int = 8,
    lora_alpha: float = 16.0,
    *,
    seed: int = 0,
    a_init: float = 1.0,
    a_groups: Mapping[str, float] | None = None,
    a_noise: float = 0.3,
    b_groups: Mapping[str, float] | None = None,
    b_noise: float = 1.0,
    b_scale: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    """``{task: {module: (A (r, d_in), B (d_out, r), scaling)}}`` following the second model of the module docstring.

    ``metadata``: ``{task: {...}}``; a task's ``seed`` (default 0) selects its
    initial A0. ``a_groups``/``b_groups``: ``{metadata key: weight}`` of the
    group-shared components. ``b_scale``: overall size of B (trained LoRA B
    starts at zero and stays small). Scaling is ``lora_alpha / rank``.
    ``seed`` offsets every draw (a different synthetic world).
    """
    a_groups, b_groups = dict(a_groups or {}), dict(b_groups or {})
    for task, meta in metadata.items():
        for key in list(a_groups) + list(b_groups):
            if key not in meta:
                raise ValueError(f"synthetic_factors: task {task!r} has no metadata key {key!r}")
    scaling = float(lora_alpha) / rank
    out: dict[str, dict] = {t: {} for t in metadata}
    for module, (d_out, d_in) in shapes.items():
        a_unit = 1.0 / math.sqrt(3 * d_in)  # std of uniform(-1/sqrt(d_in), 1/sqrt(d_in))
        b_unit = b_scale / math.sqrt(rank)
        init_cache: dict[int, torch.Tensor] = {}
        group_cache: dict[tuple, torch.Tensor] = {}

        def group(side: str, key: str, value) -> torch.Tensor:
            ck = (side, key, value)
            if ck not in group_cache:
                g = _generator(seed, module, side, key, value)
                shape = (rank, d_in) if side == "a" else (d_out, rank)
                group_cache[ck] = torch.randn(shape, generator=g, dtype=_F64)
            return group_cache[ck]

        for task, meta in metadata.items():
            task_seed = int(meta.get("seed", 0))
            if task_seed not in init_cache:
                init_cache[task_seed] = kaiming_uniform_like((rank, d_in), _generator(seed, module, "init", task_seed)).double()
            A = a_init * init_cache[task_seed]
            for key, w in a_groups.items():
                A = A + w * a_unit * group("a", key, meta[key])
            A = A + a_noise * a_unit * torch.randn((rank, d_in), generator=_generator(seed, module, "ea", task), dtype=_F64)
            B = torch.zeros(d_out, rank, dtype=_F64)
            for key, w in b_groups.items():
                B = B + w * b_unit * group("b", key, meta[key])
            B = B + b_noise * b_unit * torch.randn((d_out, rank), generator=_generator(seed, module, "eb", task), dtype=_F64)
            out[task][module] = (A.to(dtype), B.to(dtype), scaling)
    return out


def synthetic_initial_a(
    shapes: Mapping[str, tuple[int, int]],
    seeds: Sequence[int],
    rank: int = 8,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[int, dict[str, torch.Tensor]]:
    """The initial ``A0`` ``(rank, d_in)`` that :func:`synthetic_factors` uses: ``{task seed: {module: A0}}``."""
    return {
        int(s): {m: kaiming_uniform_like((rank, d_in), _generator(seed, m, "init", int(s))).to(dtype)
                 for m, (_, d_in) in shapes.items()}
        for s in seeds
    }


def synthetic_adapters(shapes, metadata, base_model: str | None = "synthetic", **kwargs):
    """An :class:`~hydralib.adapters.AdapterSet` of :func:`synthetic_factors` with ``metadata`` attached."""
    from .adapters import AdapterSet

    factors = synthetic_factors(shapes, metadata, **kwargs)
    return AdapterSet.from_factors(factors, base_model=base_model, metadata={t: dict(m) for t, m in metadata.items()})


# ============================================================================= the benchmark's structured sets

#: The default structure of the benchmark's adapters (recorded in every result).
STRUCTURE = {"shared_a": 0.8, "group_b": 0.5, "n_groups": 5, "basis": "random"}


def task_names(n_tasks: int, n_groups: int) -> tuple[list[str], list[int]]:
    """Task names ``app{g}-t{i}`` and their group (contiguous blocks, like applications x languages)."""
    n_groups = max(1, min(int(n_groups), int(n_tasks)))
    groups = [i * n_groups // n_tasks for i in range(n_tasks)]
    width = len(str(n_tasks - 1)) if n_tasks > 1 else 1
    width = max(width, 2)
    return [f"app{g}-t{i:0{width}d}" for i, g in enumerate(groups)], groups


def change_basis(factors: dict, seed: int) -> dict:
    """Re-express every task's factors in a random orthonormal basis of its rank space, in place.

    ``A <- R A``, ``B <- B R^T`` with ``R`` from the QR of a seeded Gaussian
    ``r x r`` matrix (seed derived from ``(seed, "basis", task, module)``); on
    the factors; ``dW = s B A`` is unchanged up to rounding.
    """
    for task, modules in factors.items():
        for module, (A, B, s) in modules.items():
            gen = torch.Generator().manual_seed(derive_seed(seed, "basis", task, module))
            R, _ = torch.linalg.qr(torch.randn(A.shape[0], A.shape[0], generator=gen, dtype=_F64))
            modules[module] = ((R @ A.double()).to(A.dtype), (B.double() @ R.T).to(B.dtype), s)
    return factors


def structured_factors(
    preset,
    seed: int = 0,
    *,
    shared_a: float = STRUCTURE["shared_a"],
    group_b: float = STRUCTURE["group_b"],
    n_groups: int = STRUCTURE["n_groups"],
    basis: str = STRUCTURE["basis"],
    modules: dict[str, tuple[int, int]] | None = None,
) -> tuple[dict, dict]:
    """``({task: {module: (A, B, scaling)}}, {task: {"application": ...}})`` for a preset's shapes.

    ``preset``: anything with ``n_tasks``, ``rank`` and ``modules()`` (``{module:
    (d_out, d_in)}``), e.g. a :class:`hydralib.bench.presets.BenchPreset`.
    float32 factors, scaling 2 (lora_alpha = 2r), seeded. ``basis`` is
    ``"random"`` (see the module docstring) or ``"aligned"`` (no change of basis).
    ``modules`` overrides the preset's ``{module: (d_out, d_in)}``.
    """
    if basis not in ("random", "aligned"):
        raise ValueError(f"basis must be 'random' or 'aligned', got {basis!r}")
    tasks, groups = task_names(preset.n_tasks, n_groups)
    factors = random_lora_factors(
        preset.n_tasks, modules if modules is not None else preset.modules(), preset.rank, seed,
        shared_a=shared_a, groups=groups, group_b=group_b if len(set(groups)) > 1 else 0.0, task_names=tasks,
    )
    if basis == "random":
        change_basis(factors, seed)
    metadata = {t: {"application": f"app{g}"} for t, g in zip(tasks, groups)}
    return factors, metadata


def write_peft_dirs(factors: dict, metadata: dict, root: str | Path, base_model: str = "synthetic-bench") -> list[Path]:
    """Write every task as a PEFT LoRA directory ``root/<task>`` (float32, lossless); return the directories."""
    from .adapters import AdapterSet

    aset = AdapterSet.from_factors(factors, base_model=base_model, metadata=metadata)
    root = Path(root)
    return [aset.save_peft(task, root / task) for task in aset.tasks]


# ============================================================================= VeRA sets


def random_vera_adapters(
    n_tasks: int,
    modules: Mapping[str, tuple[int, int]],
    rank: int,
    seed: int = 0,
    *,
    prng_key: int = 0,
    shared_b: float = 0.0,
    shared_d: float = 0.0,
    groups: Sequence[object] | None = None,
    group_b: float = 0.0,
    group_d: float = 0.0,
    task_names: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    base_model: str | None = "synthetic",
    save_projection: bool = True,
):
    """A random VeRA :class:`~hydralib.adapters.AdapterSet` over modules ``{name: (d_out, d_in)}``.

    Projections are peft's, regenerated from ``prng_key``
    (:func:`~hydralib.peft_io.vera_projections`). Vectors: ``lambda_b_i = mix``
    of a part common to all tasks (fraction ``shared_b``), a part common to the
    task's group (``group_b``, needs ``groups``) and its own part, entries
    N(0, 1); the same for ``lambda_d`` with ``shared_d`` / ``group_d``. So
    ``shared_d=1`` gives every task the same lambda_d. Module m draws from
    ``torch.Generator().manual_seed(derive_seed(seed, "vera", m))``. The set
    carries a peft ``VeraConfig`` so that results can be saved as PEFT directories.
    """
    from peft import VeraConfig

    from .adapters import AdapterSet, ModuleInfo
    from .peft_io import vera_projections

    names = list(task_names) if task_names is not None else [f"task{i}" for i in range(n_tasks)]
    if len(names) != n_tasks or len(set(names)) != n_tasks:
        raise ValueError(f"random_vera_adapters: need {n_tasks} distinct task names, got {names}")
    groups = _check_groups("random_vera_adapters", n_tasks, groups,
                           (("lambda_b", shared_b, group_b), ("lambda_d", shared_d, group_d)), "group_b / group_d")
    labels = list(dict.fromkeys(groups))
    vera: dict[str, dict] = {t: {} for t in names}
    info = {}
    for module, (d_out, d_in) in modules.items():
        d_out, d_in = int(d_out), int(d_in)
        info[module] = ModuleInfo(module, d_out, d_in)
        gen = torch.Generator().manual_seed(derive_seed(seed, "vera", module))

        def draw():
            return torch.randn(d_out, generator=gen, dtype=_F64), torch.randn(rank, generator=gen, dtype=_F64)

        common = draw()
        parts = {label: draw() for label in labels}
        for task, label in zip(names, groups):
            own = draw()
            lb = _mix(common[0], parts[label][0], own[0], shared_b, group_b).float()
            ld = _mix(common[1], parts[label][1], own[1], shared_d, group_d).float()
            vera[task][module] = (lb, ld)
    max_out = max(i.d_out for i in info.values())
    max_in = max(i.d_in for i in info.values())
    projections = vera_projections(prng_key, rank, max_out, max_in)
    config = VeraConfig(r=rank, target_modules=sorted(modules), projection_prng_key=prng_key,
                        save_projection=save_projection, vera_dropout=0.0, base_model_name_or_path=base_model).to_dict()
    config["peft_type"] = "VERA"
    config["target_modules"] = sorted(modules)
    return AdapterSet("vera", names, info, vera=vera, projections=projections, base_model=base_model,
                      metadata=metadata, configs={t: copy.deepcopy(config) for t in names})
