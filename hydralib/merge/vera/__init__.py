"""Merging VeRA adapters: baselines on the trainable vectors, and a HydraOpt analogue.

VeRA (Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation", ICLR
2024, arXiv:2310.11454) trains, per module, two vectors only: ``lambda_b``
``(d_out,)`` and ``lambda_d`` ``(r,)``. The projections ``A = vera_A[:, :d_in]``
``(r, d_in)`` and ``B = vera_B[:d_out]`` ``(d_out, r)`` are frozen, random and
shared by every adapter made with the same ``projection_prng_key``. Task i's
update is

    dW_i = diag(b_i) B diag(d_i) A = (B o L_i) A,        L_i = b_i d_i^T  (d_out, r), rank one,

with ``o`` the entrywise product, ``b_i = lambda_b`` and ``d_i = lambda_d``.

**Averaging the vectors is not averaging dW.** The update is bilinear in
(b, d): the update of the averaged vectors is ``(B o (b_bar d_bar^T)) A`` while
the average update is ``(B o mean_i(b_i d_i^T)) A``; they differ by

    mean_i (b_i d_i^T) - b_bar d_bar^T = mean_i (b_i - b_bar)(d_i - d_bar)^T,

the (weighted) cross-covariance of the two vectors over tasks, pushed through
the projections. It vanishes when all b_i or all d_i are equal, not otherwise.
:func:`vector_average_gap` measures it (relative Frobenius error).

Contents
--------
* Baselines (one VeRA adapter for all tasks): :func:`merge_vera_vectors` runs
  task arithmetic, TIES, DARE, DARE-TIES (``peft.utils.merge_utils`` through
  :func:`~hydralib.merge.baselines.merge_deltas`, seeded) on the stacked ``lambda_b`` and
  the stacked ``lambda_d`` of every module (vector space; the result is a
  VeRA adapter). :func:`merge_vera_dense` is the dW-space reference: the same
  methods on the dense updates, stored as a LoRA (it is not a VeRA adapter).
* :func:`vector_average_gap`: how far averaging the vectors is from averaging dW.
* :func:`vera_hydraopt`: one vector shared by all tasks and one vector per
  head (``side="d"``: shared ``lambda_d'`` (r,), heads ``lambda_b'_k``
  (d_out,); ``side="b"`` the mirror), fitted to
  ``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` module by module by alternating
  least squares or Adam (:data:`VERA_SOLVERS`).

The package's parts: :mod:`.algebra` (the per-module Gram forms, never a
dense dW, the objective and its floor), :mod:`.solvers` (ALS and Adam at one
module, :data:`VERA_SOLVERS`), :mod:`.sets` (VeRA adapter-set plumbing),
:mod:`.gap` (the vector-average gap), :mod:`.baselines` (merges on the
vectors and in dW space) and :mod:`.result` (results, PEFT export); the
entry point :func:`vera_hydraopt` is here. Every public name is importable
from ``hydralib.merge.vera`` (the solvers also from the old path
``hydralib.merge.vera_solvers``).

There is no closed-form minimum: the problem is bilinear and not convex.
What exists is a lower bound (``floor``): the within-group spread
``sum_i w_i ||dW_i - M_g(i)||^2`` (M_k the weighted mean dW of head k), the
loss of the best unconstrained update per head. It is reached only in
special cases. In particular, unlike LoRA HydraOpt, one head per task
(``heads="task"``) is exact only when the tasks' shared-side vectors are
parallel (side d: all lambda_d_i proportional), because the shared vector
is one vector for every task.

Storage counts the vectors only: the projections are regenerated from the
PRNG key (:func:`hydralib.storage.vera_module_params`).

Example
-------
>>> from hydralib.merge.vera import merge_vera_vectors, vector_average_gap, vera_hydraopt
>>> from hydralib.synthetic import random_vera_adapters
>>> aset = random_vera_adapters(4, {"layers.0.q_proj": (24, 16)}, rank=4, seed=0)
>>> vector_average_gap(aset).total > 0.1          # averaging the vectors is not averaging dW
True
>>> ta = merge_vera_vectors(aset, "task_arithmetic", weights=[0.25] * 4, progress=False)   # on the vectors
>>> ta.storage == 24 + 4
True
>>> hydra = vera_hydraopt(aset, heads=2, side="d", progress=False)   # shared lambda_d, 2 lambda_b heads
>>> hydra.storage == 4 + 2 * 24, hydra.total_floor <= hydra.total_loss <= hydra.total_energy
(True, True)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ...synthetic import derive_seed
from ..hydraopt import Grouping, resolve_groups, task_weights
from .algebra import VERA_SIDES, gram_root, masked_norms_sq, vera_delta, vera_floor, vera_objective
from .baselines import MergedVeRA, merge_vectors, merge_vera_dense, merge_vera_vectors
from .gap import VectorAverageGap, vector_average_gap
from .result import VeraHydraResult, VeraModuleResult
from .sets import _as_vera_set, _module_vectors, _select_modules, _source
from .solvers import VERA_SOLVERS, VeraModuleSolution, VeraSolver, solve_vera_adam, solve_vera_als

__all__ = [
    "VERA_SIDES",
    "gram_root",
    "masked_norms_sq",
    "vera_delta",
    "vera_objective",
    "vera_floor",
    "VectorAverageGap",
    "vector_average_gap",
    "merge_vectors",
    "MergedVeRA",
    "merge_vera_vectors",
    "merge_vera_dense",
    "VeraModuleSolution",
    "solve_vera_als",
    "solve_vera_adam",
    "VeraSolver",
    "VERA_SOLVERS",
    "VeraModuleResult",
    "VeraHydraResult",
    "vera_hydraopt",
]


def vera_hydraopt(
    adapters,
    heads: str | int | Mapping[str, str] | Grouping = "task",
    side: str = "d",
    solver: str = "als",
    weighting: str | Mapping[str, float] | Sequence[float] = "uniform",
    *,
    modules: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    device: str | torch.device | None = None,
    cluster_method: str = "average",
    init: str = "svd",
    restarts: int = 0,
    seed: int = 0,
    progress: bool = True,
    **solver_options,
) -> VeraHydraResult:
    """Fit the VeRA HydraOpt analogue to every module of a VeRA adapter set; on the vectors.

    Per module, minimise ``sum_i w_i ||dW'_g(i) - dW_i||_F^2`` with
    ``dW = diag(lambda_b) B diag(lambda_d) A`` and the set's frozen projections.

    Parameters
    ----------
    adapters: a VeRA :class:`~hydralib.adapters.AdapterSet` (e.g. from :func:`~hydralib.load_adapters`).
    heads: as in :func:`~hydralib.merge.hydraopt.hydraopt` (:func:`~hydralib.merge.hydraopt.resolve_groups`):
        ``"task"`` (K = N), a metadata key (``"application"``, ``"language"``),
        an int K (clustering of the tasks' updates), or a ``{task: head}`` mapping.
    side: ``"d"`` (default): one lambda_d' ``(r,)`` shared by all tasks, a
        lambda_b'_k ``(d_out,)`` per head; ``"b"``: one lambda_b' shared, a
        lambda_d'_k ``(r,)`` per head.
    solver: ``"als"`` (:func:`solve_vera_als`) or ``"adam"`` (:func:`solve_vera_adam`).
    weighting: ``"uniform"``, ``"norm"`` (1/||dW_i||^2 per module) or explicit weights.
    metadata: ``{task: {...}}`` used for metadata heads instead of the set's own.
    device: ``None`` = CUDA when available; results are on the CPU.
    init, seed: the starting shared vector (``"svd"``, ``"mean"``, ``"random"`` seeded by ``seed``).
    restarts: extra random starts per module (seeded by ``derive_seed(seed, module, "restart", j)``);
        the start with the lowest loss is kept. The problem is not convex and has
        local minima: different starts can end at different losses.
    solver_options: passed to the solver (ALS: ``max_iters``, ``tol``,
        ``target_relative``; Adam: ``max_steps``, ``lr``, ``tol``, ``target_relative``, ``dtype``...).

    Storage per module: ``r + K d_out`` (side d) or ``d_out + K r`` (side b).
    """
    from tqdm.auto import tqdm

    if side not in VERA_SIDES:
        raise ValueError(f"side must be one of {VERA_SIDES}, got {side!r}")
    if solver not in VERA_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {sorted(VERA_SOLVERS)}")
    aset = _as_vera_set(adapters, "vera_hydraopt")
    modules = _select_modules(aset, modules)
    if metadata is not None:
        aset = aset.subset(aset.tasks)
        aset.metadata = {t: dict(metadata.get(t, {})) for t in aset.tasks}
    grouping = resolve_groups(heads, aset, modules=modules, cluster_method=cluster_method)
    group_index = grouping.index(aset.tasks)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = VERA_SOLVERS[solver]
    results: dict[str, VeraModuleResult] = {}
    for module in tqdm(modules, desc=f"VeRA hydraopt {solver} side {side}", disable=not progress, leave=False):
        LB, LD, vA, vB = _module_vectors(aset, module, dtype=aset.dtype)
        root = gram_root(vA)
        norms = masked_norms_sq(LB.double()[:, :, None] * LD.double()[:, None, :], vB.double(), root)
        w = task_weights(weighting, aset.tasks, norms, module)
        starts = [(init, seed)] + [("random", derive_seed(seed, module, "restart", j)) for j in range(int(restarts))]
        sol, start_losses, seconds = None, [], 0.0
        for start_init, start_seed in starts:
            candidate = spec.fn(LB, LD, vA, vB, w, group_index, grouping.n_heads, side, module,
                                init=start_init, seed=start_seed, device=device, **solver_options)
            start_losses.append(candidate.loss)
            seconds += candidate.seconds
            if sol is None or candidate.loss < sol.loss:
                sol = candidate
        results[module] = VeraModuleResult(module, side, sol.shared, sol.heads, sol.loss, sol.floor, sol.energy, w,
                                           history=sol.history, steps=sol.steps, seconds=seconds,
                                           start_losses=start_losses)
    return VeraHydraResult(
        side=side, solver=solver, weighting=weighting if isinstance(weighting, str) else "explicit",
        tasks=list(aset.tasks), head_names=list(grouping.head_names), task_to_head=dict(grouping.task_to_head),
        modules=results, source=_source(aset), grouping=grouping.how,
        metadata={t: dict(aset.metadata.get(t, {})) for t in aset.tasks},
        options={"init": init, "restarts": int(restarts), "seed": int(seed), "cluster_method": cluster_method,
                 **{k: v for k, v in solver_options.items() if isinstance(v, (int, float, str, bool))}},
    )
