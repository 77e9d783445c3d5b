"""HydraOpt: one shared factor and K heads that reconstruct N LoRA adapters.

Ceritli et al., "HydraOpt: Navigating the Efficiency-Performance Trade-off of
Adapter Merging", arXiv:2507.17706 (EMNLP 2025). Per module, with A shared
(``side="A"``), the unknowns are ``A'`` ``(r', d_in)`` and heads
``B'_1..B'_K`` ``(d_out, r')``; task i uses head g(i). The objective is

    L = sum_i w_i || B'_g(i) A' - dW_i ||_F^2,        dW_i = s_i B_i A_i.

With group weights ``W_k = sum_{i in k} w_i`` and weighted group means
``M_k = sum_{i in k} w_i dW_i / W_k``,

    L = sum_i w_i ||dW_i - M_g(i)||^2  +  sum_k W_k ||B'_k A' - M_k||^2
        (spread: no A', B' removes it)    (rank-r' fit of S = [sqrt(W_k) M_k]_k)

and by Eckart-Young the minimum of the second term is the sum of the squared
singular values of S beyond r' (the *truncation* term). ``floor = spread +
truncation``. Everything here works on the factors (see :mod:`hydralib.merge.lowrank`):
``solver="exact"`` takes the top r' eigenvectors of ``S^T S = A_cat^T D
A_cat`` (block Krylov steps on the stacked A_i for large problems, else those
of the ``R x R`` matrix ``(SQ)^T (SQ)``, ``A' = V^T Q^T``) and sets
``B'_k = M_k A'^T``;
``solver="adam"`` learns A', B'_k by gradient descent on the same objective,
evaluated through ``r x r`` Gram matrices. ``side="B"`` shares B' ``(d_out, r')``
and gives every head its own A'_k ``(r', d_in)``; it is solved as side A on the
transposed factors (``dW^T = s A^T B^T``).

Example
-------
>>> from hydralib.synthetic import random_lora_factors, synthetic_tasks
>>> tasks, meta = synthetic_tasks(["qa", "summary"], ["en", "de"])
>>> factors = random_lora_factors(4, {"layers.0.q_proj": (24, 16)}, rank=2, seed=0, task_names=tasks)
>>> result = hydraopt(factors, heads="task", rank=8, metadata=meta, progress=False)
>>> result.total_loss < 1e-6 * result.total_energy      # K = N and r' = sum of ranks: exact
True
>>> by_app = hydraopt(factors, heads="application", rank=2, metadata=meta, progress=False)
>>> by_app.head_names, by_app.storage == 2 * 16 + 2 * 2 * 24
(['qa', 'summary'], True)
>>> abs(by_app.total_loss - by_app.total_floor) < 1e-4 * by_app.total_energy   # exact solver reaches the floor
True

The package shows the parts (:func:`hydraopt` below is the entry point):

* :mod:`.problem` - the per-module problem: :class:`ModuleSolution`, checks,
  :func:`objective` on the factors, :func:`transpose_factors` for side B;
* :mod:`.groups` - which tasks share a head (:class:`Grouping`, by task,
  metadata, mapping or clustering of :func:`task_similarity`);
* :mod:`.weighting` - the task weights w_i (:data:`WEIGHTINGS`);
* :mod:`.exact` - the exact solver :func:`solve_exact`;
* :mod:`.adam` - the iterative solver :func:`solve_adam`;
* :mod:`.result` - :class:`HydraOptResult`, bundles (save, load) and the PEFT export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ...errors import AdapterError
from ...threads import map_modules
from ..lowrank import check_factors, delta_norms_sq
from .adam import solve_adam
from .exact import solve_exact
from .groups import (
    Grouping,
    group_by_clustering,
    group_by_metadata,
    group_by_task,
    group_explicit,
    resolve_groups,
    task_similarity,
)
from .problem import ModuleSolution, _as_adapter_set, _module_factors, check_grouping, objective, transpose_factors
from .result import HydraOptResult, ModuleResult, bundle_storage, export_peft, load_bundle, save_bundle
from .weighting import WEIGHTINGS, task_weights

__all__ = [
    "ModuleSolution",
    "solve_exact",
    "solve_adam",
    "objective",
    "transpose_factors",
    "check_grouping",
    "Solver",
    "SOLVERS",
    "WEIGHTINGS",
    "task_weights",
    "Grouping",
    "group_by_task",
    "group_by_metadata",
    "group_explicit",
    "group_by_clustering",
    "task_similarity",
    "resolve_groups",
    "ModuleResult",
    "HydraOptResult",
    "save_bundle",
    "load_bundle",
    "bundle_storage",
    "export_peft",
    "hydraopt",
]

SIDES = ("A", "B")


@dataclass(frozen=True)
class Solver:
    """A registered HydraOpt solver: ``fn(As, Bs, scalings, weights, group_index, n_groups, rank, module, **options)``.

    Every solver takes ``check=False`` to skip :func:`~hydralib.merge.lowrank.check_factors` (shapes and finiteness) when
    the caller has already checked the factors, as :func:`hydraopt` does once per module."""

    name: str
    fn: Callable[..., ModuleSolution]
    reference: str
    description: str
    iterative: bool = False  # takes floor=, device=, seed=, target_loss= and records a loss history


SOLVERS: dict[str, Solver] = {
    "exact": Solver(
        "exact", solve_exact,
        "Eckart & Young (1936), Psychometrika 1(3); closed form derived in the book's chapter *HydraOpt step by step*",
        "top-r' eigenvectors of the Gram matrix of the stacked group means, in factored form "
        "(block Krylov on the stacked lora_A, or an R x R eigenproblem)",
    ),
    "adam": Solver(
        "adam", solve_adam,
        "Ceritli et al. (2025), HydraOpt, arXiv:2507.17706; Kingma & Ba (2015), Adam, arXiv:1412.6980",
        "the paper's iterative optimisation of A' and the heads with Adam, factored loss",
        iterative=True,
    ),
}


def _to_side(solution: ModuleSolution, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    if side == "A":
        return solution.shared, solution.heads
    # solved on transposes: shared^T is lora_b (d_out, r'), heads^T are lora_a (r', d_in)
    return solution.shared.T.contiguous(), solution.heads.transpose(1, 2).contiguous()


def hydraopt(
    adapters,
    heads: str | int | Mapping[str, str] | Grouping = "task",
    rank: int | None = None,
    side: str = "A",
    solver: str = "exact",
    weighting: str | Mapping[str, float] | Sequence[float] = "uniform",
    *,
    modules: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    base_model: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cluster_method: str = "average",
    progress: bool = True,
    seed: int = 0,
    on_module: Callable[[ModuleResult], ModuleResult] | None = None,
    **solver_options,
) -> HydraOptResult:
    """Fit HydraOpt to every module of an adapter set; works on the factors.

    Parameters
    ----------
    adapters: an :class:`~hydralib.adapters.AdapterSet`, or ``{task: {module: (A, B, scaling)}}``
        (then ``metadata`` / ``base_model`` describe it).
    heads: ``"task"`` (K = N), a metadata key (``"application"``, ``"language"``),
        an int K (hierarchical clustering of :func:`task_similarity`), or a
        ``{task: head}`` mapping.
    rank: r' of the result (default: the largest task rank at each module).
    side: ``"A"`` (shared lora_a, per-head lora_b) or ``"B"`` (the mirror).
    solver: a name in :data:`SOLVERS` (``"exact"``, ``"adam"``).
    weighting: ``"uniform"``, ``"norm"`` (1/||dW_i||^2, per module), or explicit
        weights (mapping or sequence in task order).
    device: where to compute (``None``: CUDA when available, else CPU); results are on the CPU.
    dtype: compute dtype of the factors (float32 by default).
    seed: seeds the Adam solver's extra initial rows (r' > r).
    on_module: called with each module's result as it is ready (in module order, in this thread); what it
        returns is kept instead (:func:`~.stream.hydraopt_to_bundle` writes the tensors to disk and keeps shapes).
    solver_options: passed to the solver (e.g. ``max_steps``, ``lr``, ``tol``,
        ``target_loss`` for Adam; ``target_ratio=0.01`` stops Adam within 1 %
        of each module's exact floor).

    Returns a :class:`HydraOptResult` (per-module shared factor and heads,
    task -> head, loss, floor, storage, Adam's loss history).
    """
    from tqdm.auto import tqdm

    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {sorted(SOLVERS)}")
    aset = _as_adapter_set(adapters, metadata=metadata, base_model=base_model)
    if getattr(aset, "magnitudes", None):  # the adapted weight needs W0: hydralib.merge.dora
        raise AdapterError("hydraopt: DoRA adapters: use hydralib.merge.hydraopt_dora(adapters, base_model=...)")
    modules = list(modules) if modules is not None else list(aset.modules)
    unknown = [m for m in modules if m not in set(aset.modules)]
    if unknown:
        raise ValueError(f"unknown modules {unknown[:3]}; the adapters adapt e.g. {aset.modules[:3]}")
    grouping = resolve_groups(heads, aset, modules=modules, cluster_method=cluster_method)
    group_index = grouping.index(aset.tasks)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weighting_name = weighting if isinstance(weighting, str) else "explicit"
    target_ratio = solver_options.pop("target_ratio", None)
    spec = SOLVERS[solver]
    if not spec.iterative and (solver_options or target_ratio is not None):
        extra = sorted(solver_options) + (["target_ratio"] if target_ratio is not None else [])
        raise ValueError(f"solver {solver!r} takes no solver options, got {extra} (they are for solver='adam')")

    def solve_module(module: str) -> ModuleResult:
        As, Bs, ss = _module_factors(aset, module, device=device, dtype=dtype)
        check_factors(As, Bs, ss, module, aset.tasks)
        if isinstance(weighting, str) and weighting != "uniform":
            norms = delta_norms_sq(As, Bs, ss).cpu()
        else:  # uniform and explicit weights do not look at the norms
            norms = torch.ones(len(As), dtype=torch.float64)
        w = task_weights(weighting, aset.tasks, norms, module)
        r_out = int(rank) if rank is not None else max(int(A.shape[0]) for A in As)
        if side == "B":
            As, Bs = transpose_factors(As, Bs)
        options = dict(solver_options)
        if spec.iterative:  # the floor (and a target relative to it) comes from one exact solve
            exact = solve_exact(As, Bs, ss, w, group_index, grouping.n_heads, r_out, module, check=False)
            options.update(floor=exact)
            options.setdefault("device", device)
            options.setdefault("seed", seed)
            if target_ratio is not None:
                options.setdefault("target_loss", exact.floor * (1 + float(target_ratio)))
        sol = spec.fn(As, Bs, ss, w, group_index, grouping.n_heads, r_out, module, check=False, **options)
        shared, head_tensors = _to_side(sol, side)
        return ModuleResult(
            module, shared.cpu(), head_tensors.cpu(), sol.loss, sol.floor, sol.spread, sol.truncation, sol.energy,
            w, history=sol.history, steps=sol.steps, seconds=sol.seconds,
        )

    bar = tqdm(total=len(modules), desc=f"hydraopt {solver} side {side}", disable=not progress, leave=False)
    with bar:  # modules side by side on the CPU's cores (hydralib.threads)
        results = {m: (on_module(r) if on_module else r)
                   for m, r in map_modules(solve_module, modules, device=device, progress=bar.update)}
    ranks = {m.shared.shape[0] if side == "A" else m.shared.shape[1] for m in results.values()}
    return HydraOptResult(
        side=side,
        rank=int(rank) if rank is not None else (ranks.pop() if len(ranks) == 1 else -1),
        solver=solver,
        weighting=weighting_name,
        tasks=list(aset.tasks),
        head_names=list(grouping.head_names),
        task_to_head=dict(grouping.task_to_head),
        modules=results,
        base_model=aset.base_model,
        fan_in_fan_out=aset.fan_in_fan_out,
        grouping=grouping.how,
        metadata={t: dict(aset.metadata.get(t, {})) for t in aset.tasks},
        options={"seed": seed, "cluster_method": cluster_method, **({"target_ratio": target_ratio} if target_ratio else {}),
                 **{k: v for k, v in solver_options.items() if isinstance(v, (int, float, str, bool))}},
    )
