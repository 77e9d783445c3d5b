"""Structured synthetic adapter sets for the benchmark, and writing them as PEFT directories.

Why structured, and why a change of basis
-----------------------------------------
On purely random adapters HydraOpt's Adam initialisation (mean lora_a,
group-mean lora_b) is already within about 2 % of the optimum, so "Adam until
within 1 % of the exact loss" would be measured on a problem that is solved
before it starts. The benchmark therefore draws adapters whose tasks share
structure, as trained adapters do
(:func:`~hydralib.merge.synthetic.random_lora_factors`):

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
>>> from hydralib.bench.presets import bench_preset
>>> factors, metadata = structured_factors(bench_preset("smollm2", n_tasks=10, n_layers=1), seed=0)
>>> len(factors), metadata["app0-t00"]
(10, {'application': 'app0'})
>>> A, B, s = factors["app0-t00"]["model.layers.0.self_attn.k_proj"]
>>> tuple(A.shape), tuple(B.shape), s
((8, 576), (192, 8), 2.0)
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..merge.synthetic import derive_seed, random_lora_factors
from .presets import BenchPreset

__all__ = ["STRUCTURE", "structured_factors", "change_basis", "write_peft_dirs", "task_names"]

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
            R, _ = torch.linalg.qr(torch.randn(A.shape[0], A.shape[0], generator=gen, dtype=torch.float64))
            modules[module] = ((R @ A.double()).to(A.dtype), (B.double() @ R.T).to(B.dtype), s)
    return factors


def structured_factors(
    preset: BenchPreset,
    seed: int = 0,
    *,
    shared_a: float = STRUCTURE["shared_a"],
    group_b: float = STRUCTURE["group_b"],
    n_groups: int = STRUCTURE["n_groups"],
    basis: str = STRUCTURE["basis"],
    modules: dict[str, tuple[int, int]] | None = None,
) -> tuple[dict, dict]:
    """``({task: {module: (A, B, scaling)}}, {task: {"application": ...}})`` for a preset's shapes.

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
    from ..adapters import AdapterSet

    aset = AdapterSet.from_factors(factors, base_model=base_model, metadata=metadata)
    root = Path(root)
    return [aset.save_peft(task, root / task) for task in aset.tasks]
