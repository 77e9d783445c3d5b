"""Synthetic LoRA adapter sets with known structure, for tests, benchmarks and chapter sketches.

Each task i (metadata dict with e.g. ``application``, ``language``, ``seed``)
gets, at every module of shape ``(d_out, d_in)``:

    A_i = a_init * A0[seed_i] + sum_k a_groups[k] * U_k[meta_i[k]] + a_noise * E_i     (r, d_in)
    B_i =                       sum_k b_groups[k] * V_k[meta_i[k]] + b_noise * F_i     (d_out, r)

* ``A0[seed]``: PEFT's default lora_A initialisation, kaiming-uniform with
  ``a = sqrt(5)``, i.e. uniform on ``[-1/sqrt(d_in), 1/sqrt(d_in)]``, drawn from
  ``seed`` (so tasks with the same seed share their starting A, as with PEFT
  and one global torch seed);
* ``U_k[value]``, ``V_k[value]``: a component shared by all tasks with the same
  value of metadata key k (e.g. every task in French), Gaussian;
* ``E_i``, ``F_i``: task-specific Gaussian noise.

Gaussian parts are scaled so that each term has about the same Frobenius norm
as A0 (A side) or ``1/sqrt(r)`` per column (B side). Every draw comes from a
generator seeded by ``(seed, module, component)``, so results are reproducible
and independent of the global torch RNG.

Worked example
--------------
>>> from hydralib.analysis.synthetic import llama_module_shapes, task_grid, synthetic_factors
>>> shapes = llama_module_shapes(n_layers=2, hidden=32, kv_hidden=16)
>>> list(shapes.items())[:2]
[('model.layers.0.self_attn.q_proj', (32, 32)), ('model.layers.0.self_attn.k_proj', (16, 32))]
>>> tasks, meta = task_grid(["qa", "reply"], ["en", "fr"])
>>> tasks
['qa-en', 'qa-fr', 'reply-en', 'reply-fr']
>>> f = synthetic_factors(shapes, meta, rank=4, a_groups={"language": 1.0}, b_groups={"application": 1.0})
>>> A, B, s = f["qa-en"]["model.layers.1.self_attn.v_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((4, 32), (16, 4), 4.0)
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import torch

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def llama_module_shapes(
    n_layers: int,
    hidden: int,
    kv_hidden: int,
    projections: Sequence[str] = LLAMA_PROJECTIONS,
    prefix: str = "model.layers",
) -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` of Llama attention projections, in model order.

    q_proj and o_proj are ``hidden x hidden``; k_proj and v_proj ``kv_hidden x hidden``.
    """
    out_dims = {"q_proj": hidden, "k_proj": kv_hidden, "v_proj": kv_hidden, "o_proj": hidden}
    shapes = {}
    for layer in range(n_layers):
        for p in projections:
            if p not in out_dims:
                raise ValueError(f"hydralib.analysis.synthetic: unknown projection {p!r}; use {list(out_dims)}")
            shapes[f"{prefix}.{layer}.self_attn.{p}"] = (out_dims[p], hidden)
    return shapes


def smollm2_shapes() -> dict[str, tuple[int, int]]:
    """SmolLM2-135M: 30 layers, hidden 576, key/value 192 (q/o 576->576, k/v 576->192)."""
    return llama_module_shapes(30, 576, 192)


def paper_shapes() -> dict[str, tuple[int, int]]:
    """Llama-3.2-1B as in the HydraOpt paper: 16 layers, hidden 2048, key/value 512."""
    return llama_module_shapes(16, 2048, 512)


def task_grid(
    applications: Sequence[str],
    languages: Sequence[str],
    seeds: Sequence[int] = (0,),
) -> tuple[list[str], dict[str, dict]]:
    """Tasks ``"{application}-{language}"`` (suffix ``"@s{seed}"`` when several seeds) and their metadata."""
    tasks, meta = [], {}
    for seed in seeds:
        for a in applications:
            for lang in languages:
                name = f"{a}-{lang}" if len(seeds) == 1 else f"{a}-{lang}@s{seed}"
                tasks.append(name)
                meta[name] = {"application": a, "language": lang, "seed": int(seed), "task": f"{a}-{lang}"}
    return tasks, meta


def _generator(*parts) -> torch.Generator:
    key = zlib.crc32("|".join(str(p) for p in parts).encode())
    return torch.Generator().manual_seed(key)


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
    """``{task: {module: (A (r, d_in), B (d_out, r), scaling)}}`` following the model in the module docstring.

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
                raise ValueError(f"hydralib.analysis.synthetic: task {task!r} has no metadata key {key!r}")
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
                group_cache[ck] = torch.randn(shape, generator=g, dtype=torch.float64)
            return group_cache[ck]

        for task, meta in metadata.items():
            task_seed = int(meta.get("seed", 0))
            if task_seed not in init_cache:
                init_cache[task_seed] = kaiming_uniform_like((rank, d_in), _generator(seed, module, "init", task_seed)).double()
            A = a_init * init_cache[task_seed]
            for key, w in a_groups.items():
                A = A + w * a_unit * group("a", key, meta[key])
            A = A + a_noise * a_unit * torch.randn((rank, d_in), generator=_generator(seed, module, "ea", task), dtype=torch.float64)
            B = torch.zeros(d_out, rank, dtype=torch.float64)
            for key, w in b_groups.items():
                B = B + w * b_unit * group("b", key, meta[key])
            B = B + b_noise * b_unit * torch.randn((d_out, rank), generator=_generator(seed, module, "eb", task), dtype=torch.float64)
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
    from hydralib.adapters import AdapterSet

    factors = synthetic_factors(shapes, metadata, **kwargs)
    return AdapterSet.from_factors(factors, base_model=base_model, metadata={t: dict(m) for t, m in metadata.items()})
