"""Synthetic LoRA adapters with controllable structure, for tests and benchmarks.

Each task's factors mix components shared by every task, shared by the tasks of
one group (e.g. an application), and owned by the task:

    A_i = sqrt(shared_a) A_common + sqrt(group_a) A_group(i) + sqrt(1 - shared_a - group_a) A_own(i)

and the same for B with ``shared_b`` / ``group_b``. ``shared_a > shared_b``
makes the A matrices more alike across tasks than the B matrices (the
premise HydraOpt builds on). Entries of A are N(0, 1/d_in) (rows of about unit
norm) and entries of B are N(0, b_std^2). Every module draws from its own
generator seeded by ``(seed, module name)``, so the factors of a module do not
depend on which other modules are asked for, or in what order.

Example
-------
>>> factors = random_lora_factors(3, {"layers.0.q_proj": (32, 16)}, rank=4, seed=0, shared_a=0.9)
>>> A, B, s = factors["task0"]["layers.0.q_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((4, 16), (32, 4), 2.0)
>>> tasks, metadata = synthetic_tasks(["qa", "summary"], ["en", "de"])
>>> tasks[1], metadata[tasks[1]]
('qa-de', {'application': 'qa', 'language': 'de'})
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import torch

__all__ = ["derive_seed", "random_lora_factors", "synthetic_tasks", "attention_modules"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and any keys (e.g. a module name), stable across runs and platforms."""
    text = ":".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def synthetic_tasks(applications: Sequence[str], languages: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Task names ``"{application}-{language}"`` (application-major) and their metadata."""
    tasks, metadata = [], {}
    for app in applications:
        for lang in languages:
            task = f"{app}-{lang}"
            tasks.append(task)
            metadata[task] = {"application": app, "language": lang}
    return tasks, metadata


def attention_modules(n_layers: int, d_model: int, d_kv: int, prefix: str = "model.layers") -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` of q/k/v/o projections of a Llama-style decoder.

    q_proj and o_proj are ``(d_model, d_model)``, k_proj and v_proj ``(d_kv, d_model)``.
    E.g. Llama-3.2-1B: ``attention_modules(16, 2048, 512)``; SmolLM2-135M: ``(30, 576, 192)``.
    """
    out = {}
    for layer in range(n_layers):
        base = f"{prefix}.{layer}.self_attn"
        out[f"{base}.q_proj"] = (d_model, d_model)
        out[f"{base}.k_proj"] = (d_kv, d_model)
        out[f"{base}.v_proj"] = (d_kv, d_model)
        out[f"{base}.o_proj"] = (d_model, d_model)
    return out


def _mix(common, group, own, f_common, f_group):
    """``sqrt(f_common) common + sqrt(f_group) group + sqrt(1 - f_common - f_group) own`` (zero terms skipped)."""
    out = (1.0 - f_common - f_group) ** 0.5 * own
    if f_common:
        out = out + f_common**0.5 * common
    if f_group:
        out = out + f_group**0.5 * group
    return out


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
    if groups is None:
        if group_a or group_b:
            raise ValueError("random_lora_factors: group_a / group_b need groups=")
        groups = [0] * n_tasks
    groups = list(groups)
    if len(groups) != n_tasks:
        raise ValueError(f"random_lora_factors: {len(groups)} group labels for {n_tasks} tasks")
    for name, f_common, f_group in (("A", shared_a, group_a), ("B", shared_b, group_b)):
        if min(f_common, f_group) < 0 or f_common + f_group > 1:
            raise ValueError(f"random_lora_factors: fractions of {name} must be >= 0 and sum to <= 1")
    labels = list(dict.fromkeys(groups))
    out: dict[str, dict] = {t: {} for t in task_names}
    for module in modules:
        d_out, d_in = (int(x) for x in modules[module])
        gen = torch.Generator().manual_seed(derive_seed(seed, module))

        def draw_a():
            return torch.randn(rank, d_in, generator=gen, dtype=torch.float64) / d_in**0.5

        def draw_b():
            return torch.randn(d_out, rank, generator=gen, dtype=torch.float64) * b_std

        common_a, common_b = draw_a(), draw_b()
        group_parts = {label: (draw_a(), draw_b()) for label in labels}
        for task, label in zip(task_names, groups):
            own_a, own_b = draw_a(), draw_b()
            ga, gb = group_parts[label]
            A = _mix(common_a, ga, own_a, shared_a, group_a).to(dtype)
            B = _mix(common_b, gb, own_b, shared_b, group_b).to(dtype)
            out[task][module] = (A, B, float(scaling))
    return out
