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

Factored algebra (never a ``d_out x d_in`` matrix). For any X ``(d_out, r)``,
``||(B o X) A||_F^2 = tr((B o X) G_A (B o X)^T)`` with ``G_A = A A^T`` ``(r, r)``;
it is evaluated as ``||(B o X) R||_F^2`` where ``R`` ``(r, m)`` is a square
root ``G_A = R R^T`` (``R = R_qr^T`` from the QR of ``A^T``), which is exact,
non-negative and free of cancellation. For rank-one X it reduces to Gram forms:

    ||dW||^2     = d^T (G_A o B^T diag(b o b) B) d,
    <dW, dW'>   = d^T (G_A o B^T diag(b o b') B) d' = sum_j b_j b'_j c_j(d, d'),
    c_j(u, v)   = (B_j o u)^T G_A (B_j o v)          (B_j: row j of B),

and with ``P_i = B o ((B o d_i) G_A)`` ``(d_out, r)`` one has
``c_j(u, d_i) = (P_i u)_j`` and ``(G_A o B^T diag(x) B) d_i = P_i^T x``.

Contents
--------
* Baselines (one VeRA adapter for all tasks): :func:`merge_vera_vectors` runs
  task arithmetic, TIES, DARE, DARE-TIES (``peft.utils.merge_utils`` through
  :func:`~.baselines.merge_deltas`, seeded) on the stacked ``lambda_b`` and
  the stacked ``lambda_d`` of every module (vector space; the result is a
  VeRA adapter). :func:`merge_vera_dense` is the dW-space reference: the same
  methods on the dense updates, stored as a LoRA (it is not a VeRA adapter).
* :func:`vector_average_gap`: how far averaging the vectors is from averaging dW.
* :func:`vera_hydraopt`: one vector shared by all tasks and one vector per
  head (``side="d"``: shared ``lambda_d'`` (r,), heads ``lambda_b'_k``
  (d_out,); ``side="b"`` the mirror), fitted to
  ``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` by alternating least squares
  (:func:`solve_vera_als`) or Adam (:func:`solve_vera_adam`).
* :func:`random_vera_adapters`: synthetic VeRA adapter sets for tests and the book.

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
>>> from hydralib.merge.vera import merge_vera_vectors, random_vera_adapters, vector_average_gap, vera_hydraopt
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

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..errors import AdapterError
from .baselines import MERGE_METHODS, merge_adapters, merge_deltas
from .hydraopt import Grouping, resolve_groups, task_weights
from .synthetic import _mix, derive_seed

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
    "VERA_SOLVERS",
    "VeraModuleResult",
    "VeraHydraResult",
    "vera_hydraopt",
    "random_vera_adapters",
]

VERA_SIDES = ("d", "b")
_F64 = torch.float64


# ============================================================================= factored algebra


def gram_root(vera_A: torch.Tensor) -> torch.Tensor:
    """A square root ``R`` ``(r, m)`` of ``G_A = A A^T`` (``R R^T = G_A``), ``m = min(r, d_in)``; float64.

    On the projections: ``A`` ``(r, d_in)``. From the QR of ``A^T = Q R_qr``:
    ``A = R_qr^T Q^T`` with orthonormal ``Q``, so ``||X A||_F = ||X R_qr^T||_F``
    for any X ``(., r)``.
    """
    _, r_qr = torch.linalg.qr(vera_A.to(_F64).T, mode="reduced")
    return r_qr.T.contiguous()


def masked_norms_sq(X: torch.Tensor, vera_B: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``||(B o X) A||_F^2`` for X ``(..., d_out, r)``, via ``root`` = :func:`gram_root` of A; shape ``(...)``.

    On the vectors' outer products (``X = lambda_b lambda_d^T`` gives
    ``||dW||^2``); no ``d_out x d_in`` matrix is formed. Cost ``O(d_out r m)`` per X.
    """
    Z = vera_B.to(root.dtype) * X.to(root.dtype)
    return (Z @ root).pow(2).sum(dim=(-2, -1))


def vera_delta(lambda_b: torch.Tensor, lambda_d: torch.Tensor, vera_A: torch.Tensor, vera_B: torch.Tensor) -> torch.Tensor:
    """Dense ``dW = diag(lambda_b) B diag(lambda_d) A`` ``(d_out, d_in)`` (forms the full matrix; for references).

    ``lambda_b`` ``(d_out,)``, ``lambda_d`` ``(r,)``, ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``
    (already sliced to the module).
    """
    return (lambda_b[:, None] * vera_B) @ (lambda_d[:, None] * vera_A)


def _check_vectors(lambda_b, lambda_d, vera_A, vera_B, module):
    if lambda_b.ndim != 2 or lambda_d.ndim != 2 or lambda_b.shape[0] != lambda_d.shape[0] or lambda_b.shape[0] == 0:
        raise AdapterError(
            f"module {module}: lambda_b {tuple(lambda_b.shape)} / lambda_d {tuple(lambda_d.shape)} are not (N, d_out) / (N, r)"
        )
    n, d_out = lambda_b.shape
    r = lambda_d.shape[1]
    if vera_A.ndim != 2 or vera_B.ndim != 2 or vera_A.shape[0] != r or tuple(vera_B.shape) != (d_out, r):
        raise AdapterError(
            f"module {module}: vera_A {tuple(vera_A.shape)} / vera_B {tuple(vera_B.shape)} are not (r, d_in) / (d_out, r) "
            f"for r={r}, d_out={d_out}"
        )
    for name, t in (("lambda_b", lambda_b), ("lambda_d", lambda_d), ("vera_A", vera_A), ("vera_B", vera_B)):
        if not torch.isfinite(t).all():
            raise AdapterError(f"module {module}: {name} has NaN/Inf values")


def _check_grouping(weights, group_index, n_groups, n, module):
    w = torch.as_tensor(weights, dtype=_F64).reshape(-1).cpu()
    if w.shape != (n,):
        raise AdapterError(f"module {module}: {w.numel()} weights for {n} tasks")
    if not (torch.isfinite(w).all() and (w > 0).all()):
        raise AdapterError(f"module {module}: task weights must be positive and finite, got {w.tolist()}")
    gidx = [int(g) for g in group_index]
    if len(gidx) != n:
        raise AdapterError(f"module {module}: {len(gidx)} head assignments for {n} tasks")
    if n_groups < 1 or sorted(set(gidx)) != list(range(n_groups)):
        raise AdapterError(f"module {module}: heads {sorted(set(gidx))} must be exactly 0..{n_groups - 1}, each used")
    return w, gidx


def _per_task(shared, heads, gidx, side):
    """Per-task ``(lambda_b' (N, d_out), lambda_d' (N, r))`` from a shared vector and heads."""
    if side == "d":
        return heads[gidx], shared[None, :].expand(len(gidx), -1)
    return shared[None, :].expand(len(gidx), -1), heads[gidx]


def vera_objective(
    shared: torch.Tensor,
    heads: torch.Tensor,
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    side: str = "d",
) -> float:
    """``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` on the vectors, in float64, no dense dW.

    Side ``"d"``: ``shared`` is lambda_d' ``(r,)``, ``heads`` the lambda_b'_k
    ``(K, d_out)``; side ``"b"``: ``shared`` is lambda_b' ``(d_out,)``, ``heads``
    the lambda_d'_k ``(K, r)``. Tasks: ``lambda_b`` ``(N, d_out)``, ``lambda_d``
    ``(N, r)``; projections ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``.
    Each term is ``||(B o X_i) A||^2`` with ``X_i = b'_g d'_g^T - b_i d_i^T``
    ``(d_out, r)``, evaluated by :func:`masked_norms_sq` (cost ``O(N d_out r^2)``).
    """
    if side not in VERA_SIDES:
        raise ValueError(f"side must be one of {VERA_SIDES}, got {side!r}")
    device = lambda_b.device
    root = gram_root(vera_A.to(device))
    gidx = torch.as_tensor(list(group_index), device=device)
    w = torch.as_tensor(weights, dtype=_F64).to(device)
    lbp, ldp = _per_task(shared.to(device, _F64), heads.to(device, _F64), gidx, side)
    LB, LD = lambda_b.to(_F64), lambda_d.to(_F64)
    X = lbp[:, :, None] * ldp[:, None, :] - LB[:, :, None] * LD[:, None, :]
    return float((w * masked_norms_sq(X, vera_B.to(device), root)).sum())


def _floor_and_energy(LB, LD, vera_B, root, w, gidx, n_groups):
    """``(spread, energy)`` in float64: ``sum_i w_i ||dW_i - M_g(i)||^2`` and ``sum_i w_i ||dW_i||^2``."""
    L = LB[:, :, None] * LD[:, None, :]  # (N, d_out, r)
    Wk = torch.zeros(n_groups, dtype=_F64, device=LB.device).index_add_(0, gidx, w)
    mean = torch.zeros((n_groups,) + tuple(L.shape[1:]), dtype=_F64, device=LB.device).index_add_(0, gidx, w[:, None, None] * L)
    mean = mean / Wk[:, None, None]
    spread = float((w * masked_norms_sq(L - mean[gidx], vera_B, root)).sum())
    energy = float((w * masked_norms_sq(L, vera_B, root)).sum())
    return spread, energy


def vera_floor(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
) -> float:
    """Lower bound of :func:`vera_objective` for a grouping: ``sum_i w_i ||dW_i - M_g(i)||_F^2`` (float64).

    ``M_k = sum_{i in k} w_i dW_i / W_k`` is the best single update for head k
    when any update is allowed; a VeRA head (a rank-one ``b d^T`` pushed
    through the projections, with one side shared) can only do worse or equal.
    On the vectors (``(B o (L_i - mean_k L)) A`` with ``L_i = b_i d_i^T``).
    """
    root = gram_root(vera_A.to(lambda_b.device))
    gidx = torch.as_tensor(list(group_index), device=lambda_b.device)
    w = torch.as_tensor(weights, dtype=_F64).to(lambda_b.device)
    return _floor_and_energy(lambda_b.to(_F64), lambda_d.to(_F64), vera_B.to(lambda_b.device, _F64), root, w, gidx,
                             int(gidx.max()) + 1)[0]


# ============================================================================= adapter-set plumbing


@dataclass
class _VeraSource:
    """What a VeRA result needs from its source set to be saved: projections, shapes, peft config."""

    projections: tuple[torch.Tensor, torch.Tensor]
    module_info: dict
    config: dict | None
    base_model: str | None
    stored_dtype: torch.dtype = torch.float32


def _as_vera_set(adapters, where: str):
    from ..adapters import AdapterSet

    if not isinstance(adapters, AdapterSet):
        raise TypeError(f"{where}: adapters must be a VeRA AdapterSet (hydralib.load_adapters), got {type(adapters).__name__}")
    if adapters.kind != "vera":
        raise AdapterError(f"{where}: the adapter set is {adapters.kind!r}; this function merges VeRA adapters "
                           "(use hydralib.merge.merge_adapters / hydraopt for LoRA)")
    if adapters.projections is None:
        raise AdapterError(f"{where}: the VeRA adapter set has no projections")
    return adapters


def _source(aset) -> _VeraSource:
    config = next((aset.configs[t] for t in aset.tasks if t in aset.configs), None)
    stored = aset.stored_dtypes.get(aset.tasks[0], torch.float32)
    return _VeraSource(tuple(p.cpu() for p in aset.projections), {m: aset.module_info(m) for m in aset.modules},
                       copy.deepcopy(config), aset.base_model, stored)


def _vera_set(source: _VeraSource, vectors: Mapping[str, Mapping[str, tuple]], metadata: Mapping[str, dict] | None = None):
    """A VeRA :class:`~hydralib.adapters.AdapterSet` from ``{task: {module: (lambda_b, lambda_d)}}``."""
    from ..adapters import AdapterSet

    tasks = list(vectors)
    modules = next(iter(vectors.values())).keys()
    info = {m: source.module_info[m] for m in modules}
    configs = {t: copy.deepcopy(source.config) for t in tasks} if source.config is not None else None
    clean = {t: {m: (lb.detach().cpu().contiguous(), ld.detach().cpu().contiguous()) for m, (lb, ld) in mods.items()}
             for t, mods in vectors.items()}
    return AdapterSet("vera", tasks, info, vera=clean, projections=source.projections, base_model=source.base_model,
                      metadata=metadata, configs=configs, stored_dtypes={t: source.stored_dtype for t in tasks})


def _module_vectors(aset, module, device=None, dtype=_F64):
    """``(lambda_b (N, d_out), lambda_d (N, r), vera_A (r, d_in), vera_B (d_out, r))`` of ``module``."""
    lbs, lds = zip(*(aset.vera_vectors(t, module) for t in aset.tasks))
    vA, vB = aset.vera_projections(module)
    cast = dict(device=device, dtype=dtype)
    return torch.stack(lbs).to(**cast), torch.stack(lds).to(**cast), vA.to(**cast), vB.to(**cast)


def _task_weight_list(weights, tasks) -> list[float]:
    if isinstance(weights, Mapping):
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"weights: no weight for tasks {missing[:5]}")
        return [float(weights[t]) for t in tasks]
    w = [1.0] * len(tasks) if weights is None else [float(x) for x in weights]
    if len(w) != len(tasks):
        raise ValueError(f"weights: {len(w)} weights for {len(tasks)} tasks")
    return w


def _select_modules(aset, modules):
    modules = list(modules) if modules is not None else list(aset.modules)
    unknown = [m for m in modules if m not in set(aset.modules)]
    if unknown:
        raise ValueError(f"unknown modules {unknown[:3]}; the adapters adapt e.g. {aset.modules[:3]}")
    return modules


# ============================================================================= the vector-average gap


@dataclass
class VectorAverageGap:
    """How far the update of the averaged vectors is from the average update.

    Per module: ``error[m] = ||dW(b_bar, d_bar) - mean_i dW_i||_F`` and
    ``reference[m] = ||mean_i dW_i||_F`` (weighted means); ``relative[m]`` is
    their ratio (0 when both are 0, ``inf`` when only the mean update is 0).
    ``total`` is ``sqrt(sum_m error^2 / sum_m reference^2)``.
    """

    relative: dict[str, float]
    error: dict[str, float]
    reference: dict[str, float]
    weights: list[float]

    @property
    def total(self) -> float:
        num = sum(e * e for e in self.error.values())
        den = sum(r * r for r in self.reference.values())
        return _ratio(math.sqrt(num), math.sqrt(den))


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


def vector_average_gap(
    adapters,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    modules: Sequence[str] | None = None,
) -> VectorAverageGap:
    """Relative Frobenius error of averaging the VeRA vectors instead of the updates, per module.

    With normalised weights ``p_i = w_i / sum_j w_j`` (default uniform),
    ``b_bar = sum_i p_i b_i``, ``d_bar = sum_i p_i d_i``:
    ``error = ||(B o (b_bar d_bar^T - sum_i p_i b_i d_i^T)) A||_F``, which is
    ``||(B o C) A||_F`` for the weighted cross-covariance
    ``C = sum_i p_i (b_i - b_bar)(d_i - d_bar)^T``. On the vectors (factored,
    no dense dW). Zero when all lambda_b or all lambda_d are equal.
    """
    aset = _as_vera_set(adapters, "vector_average_gap")
    modules = _select_modules(aset, modules)
    w = _task_weight_list(weights, aset.tasks)
    total = sum(w)
    if total == 0:
        raise ValueError("vector_average_gap: the weights sum to 0")
    p = torch.as_tensor([x / total for x in w], dtype=_F64)
    relative, error, reference = {}, {}, {}
    for module in modules:
        LB, LD, vA, vB = _module_vectors(aset, module)
        root = gram_root(vA)
        mean_outer = (p[:, None, None] * LB[:, :, None] * LD[:, None, :]).sum(0)
        b_bar, d_bar = p @ LB, p @ LD
        err = float(masked_norms_sq(b_bar[:, None] * d_bar[None, :] - mean_outer, vB, root).sqrt())
        ref = float(masked_norms_sq(mean_outer, vB, root).sqrt())
        error[module], reference[module], relative[module] = err, ref, _ratio(err, ref)
    return VectorAverageGap(relative, error, reference, w)


# ============================================================================= baselines on the vectors


def merge_vectors(
    vectors: Sequence[torch.Tensor],
    method: str = "task_arithmetic",
    weights: Sequence[float] | torch.Tensor | None = None,
    lam: float = 1.0,
    density: float | None = None,
    seed: int = 0,
    module: str = "<vector>",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """Merge N vectors ``(n,)`` of one module into one ``(n,)``: ``lam * merge_utils.<method>(vectors, weights)``.

    On the vectors (not dW). Delegates to :func:`~.baselines.merge_deltas` on
    ``(1, n)`` views, so the peft functions, the checks and the seeding (from
    ``(seed, module)``) are the dW baselines' own; pass distinct ``module``
    names for distinct vectors (e.g. ``"<module>.vera_lambda_b"``).
    """
    vectors = list(vectors)
    for i, v in enumerate(vectors):
        if v.ndim != 1:
            raise AdapterError(f"module {module}: vector #{i} has shape {tuple(v.shape)}, expected (n,)")
    merged = merge_deltas([v[None, :] for v in vectors], method, weights, lam, density, seed, module, majority_sign_method)
    return merged[0]


@dataclass
class MergedVeRA:
    """One merged VeRA adapter: ``vectors`` maps module -> (lambda_b ``(d_out,)``, lambda_d ``(r,)``).

    Lives in vector space: its update is ``diag(lambda_b) B diag(lambda_d) A``
    with the source's projections. ``params`` records the method's
    hyper-parameters and seed.
    """

    method: str
    params: dict
    vectors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    tasks: list[str]
    source: _VeraSource = field(repr=False)

    @property
    def base_model(self) -> str | None:
        return self.source.base_model

    def delta(self, module: str) -> torch.Tensor:
        """Dense merged dW ``(d_out, d_in)`` (forms the full matrix)."""
        lb, ld = self.vectors[module]
        info = self.source.module_info[module]
        vA, vB = self.source.projections
        return vera_delta(lb, ld, vA[:, : info.d_in].to(lb.dtype), vB[: info.d_out].to(lb.dtype))

    @property
    def storage(self) -> int:
        """Numbers stored: lambda_b and lambda_d of every module (projections come from the key)."""
        return int(sum(lb.numel() + ld.numel() for lb, ld in self.vectors.values()))

    def to_adapter_set(self, name: str | None = None):
        """A one-task VeRA :class:`~hydralib.adapters.AdapterSet` (task ``name``, default the method name)."""
        task = name or self.method
        return _vera_set(self.source, {task: self.vectors}, {task: {"method": self.method, **self.params}})

    def save_peft(self, directory: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write as a standard PEFT VeRA directory (the source's ``VeraConfig``) that stock ``peft`` loads."""
        aset = self.to_adapter_set()
        return aset.save_peft(aset.tasks[0], directory, overwrite=overwrite, dtype=dtype)


def merge_vera_vectors(
    adapters,
    method: str = "task_arithmetic",
    *,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    lam: float = 1.0,
    density: float | None = None,
    seed: int = 0,
    modules: Sequence[str] | None = None,
    majority_sign_method: str = "total",
    progress: bool = True,
) -> MergedVeRA:
    """Merge a VeRA adapter set into one VeRA adapter by merging the trainable vectors; on the vectors.

    Per module, with the names of :data:`~.baselines.MERGE_METHODS`
    (``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``):

        lambda_b' = lam * merge(lambda_b_1..N; weights),   lambda_d' = merge(lambda_d_1..N; weights)

    each by :func:`merge_vectors` (peft's ``merge_utils`` on the stacked
    ``(N, d_out)`` / ``(N, r)`` vectors). The weights apply to both vectors;
    ``lam`` to lambda_b only, so the merged update is ``lam * diag(merge b) B
    diag(merge d) A`` - scaled by ``lam`` like the dW baselines. Hence with
    ``w_i = 1/N`` task arithmetic returns the *averaged vectors* (not the
    average update: see :func:`vector_average_gap`), and with ``w_i = 1`` the
    update grows like N^2. ``density``: fraction of each vector's entries kept
    (TIES, DARE, magnitude pruning). Random masks are seeded per module and
    vector from ``(seed, "<module>.vera_lambda_b")`` / ``"..._d"``.
    """
    from tqdm.auto import tqdm

    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {sorted(MERGE_METHODS)}")
    aset = _as_vera_set(adapters, "merge_vera_vectors")
    modules = _select_modules(aset, modules)
    w = _task_weight_list(weights, aset.tasks)
    spec = MERGE_METHODS[method]
    out = {}
    for module in tqdm(modules, desc=f"merge VeRA vectors {method}", disable=not progress, leave=False):
        lbs, lds = zip(*(aset.vera_vectors(t, module) for t in aset.tasks))
        lb = merge_vectors(lbs, method, w, lam, density, seed, f"{module}.vera_lambda_b", majority_sign_method)
        ld = merge_vectors(lds, method, w, 1.0, density, seed, f"{module}.vera_lambda_d", majority_sign_method)
        out[module] = (lb.cpu(), ld.cpu())
    params = {"lam": float(lam), "weights": w, "seed": int(seed), "space": "vectors"}
    if spec.uses_density:
        params["density"] = float(density)
    if spec.sign_election:
        params["majority_sign_method"] = majority_sign_method
    return MergedVeRA(method, params, out, list(aset.tasks), _source(aset))


def merge_vera_dense(
    adapters,
    method: str = "task_arithmetic",
    *,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    lam: float = 1.0,
    density: float | None = None,
    rank: int | None = None,
    seed: int = 0,
    modules: Sequence[str] | None = None,
    majority_sign_method: str = "total",
    progress: bool = True,
):
    """Reference merge of VeRA adapters in dW space, returned as a LoRA (:class:`~.baselines.MergedLoRA`).

    ``dW = lam * merge(dW_1..N; weights)`` with ``dW_i = diag(b_i) B diag(d_i) A``,
    by :func:`~.baselines.merge_adapters` on the VeRA set's factors
    (``A_i = d_i o vera_A``, ``B_i = b_i o vera_B``), stored by truncated SVD at
    ``rank`` (default r, the VeRA rank). Every dW_i has its rows in the row
    space of ``vera_A``, so the task-arithmetic merge has rank <= r and is
    stored exactly at rank r; TIES/DARE act entrywise on dW and leave that
    space (``MergedLoRA.truncation`` reports what rank r drops). The result is
    a LoRA, not a VeRA adapter: in general no pair of vectors reproduces it
    (it would need ``sum_i w_i b_i d_i^T`` to be rank one). For reference only.
    """
    aset = _as_vera_set(adapters, "merge_vera_dense")
    if rank is None:
        rank = aset.rank(aset.tasks[0], aset.modules[0])
    merged = merge_adapters(aset, method, weights=weights, lam=lam, density=density, rank=rank, seed=seed, modules=modules,
                            majority_sign_method=majority_sign_method, progress=progress)
    merged.params["space"] = "dW"
    return merged


# ============================================================================= HydraOpt analogue: per-module problem


@dataclass
class _Problem:
    """Precomputed quantities at one module (all on one device, in one dtype).

    ``LB`` ``(N, d_out)``, ``LD`` ``(N, r)``, ``B`` ``(d_out, r)``, ``G`` = A A^T
    ``(r, r)``, ``P`` ``(N, d_out, r)`` with ``P_i = B o ((B o d_i) G)``, ``w``
    ``(N,)``, ``gidx`` ``(N,)``, ``Wk`` ``(K,)`` group weights, ``energy`` =
    ``sum_i w_i ||dW_i||^2`` (a Python float).
    """

    side: str
    LB: torch.Tensor
    LD: torch.Tensor
    B: torch.Tensor
    G: torch.Tensor
    P: torch.Tensor
    w: torch.Tensor
    gidx: torch.Tensor
    Wk: torch.Tensor
    energy: float

    @property
    def n_groups(self) -> int:
        return int(self.Wk.shape[0])

    def to(self, dtype) -> "_Problem":
        cast = {k: getattr(self, k).to(dtype) for k in ("LB", "LD", "B", "G", "P", "w", "Wk")}
        return _Problem(self.side, gidx=self.gidx, energy=self.energy, **cast)


def _make_problem(LB, LD, vA, vB, w, gidx, n_groups, side, device) -> _Problem:
    LB, LD, vA, vB = (t.to(device=device, dtype=_F64) for t in (LB, LD, vA, vB))
    G = vA @ vA.T
    P = vB[None] * ((vB[None] * LD[:, None, :]) @ G)
    w = w.to(device=device, dtype=_F64)
    gidx_t = torch.as_tensor(gidx, device=device)
    Wk = torch.zeros(n_groups, dtype=_F64, device=device).index_add_(0, gidx_t, w)
    energy = float((w * (LB * LB * torch.einsum("njr,nr->nj", P, LD)).sum(1)).sum())
    return _Problem(side, LB, LD, vB, G, P, w, gidx_t, Wk, energy)


def _psd_solve(H: torch.Tensor, C: torch.Tensor, rtol: float = 1e-12) -> torch.Tensor:
    """Minimum-norm least-squares solution of ``H X = C`` for symmetric PSD ``H`` (eigen-pseudo-inverse)."""
    values, vectors = torch.linalg.eigh(H.to(_F64))
    keep = values > rtol * values.abs().max().clamp_min(1e-300)
    inv = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)), torch.zeros_like(values))
    return (vectors @ (inv[:, None] * (vectors.T @ C.to(_F64)))).to(C.dtype)


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = den > 1e-14 * den.abs().max().clamp_min(1e-300)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _c_self(B, G, u):
    """``c_j(u, u) = (B_j o u)^T G (B_j o u)`` for every row j: ``(d_out,)``."""
    Bu = B * u[None, :]
    return ((Bu @ G) * Bu).sum(1)


def _heads_step(p: _Problem, shared: torch.Tensor) -> torch.Tensor:
    """Exact minimiser over the heads given the shared vector (closed form).

    Side d (shared lambda_d' = u): per head k and output row j,
    ``b'_kj = sum_{i in k} w_i b_ij c_j(u, d_i) / (W_k c_j(u, u))``.
    Side b (shared lambda_b' = v): per head k,
    ``d'_k = H^+ sum_{i in k} w_i P_i^T (v o b_i) / W_k`` with ``H = G o B^T diag(v o v) B`` ``(r, r)``.
    """
    if p.side == "d":
        Pu = p.P @ shared  # (N, d_out): c_j(u, d_i)
        num = torch.zeros(p.n_groups, p.LB.shape[1], dtype=shared.dtype, device=shared.device)
        num.index_add_(0, p.gidx, p.w[:, None] * p.LB * Pu)
        den = p.Wk[:, None] * _c_self(p.B, p.G, shared)[None, :]
        return _safe_divide(num, den)
    H = p.G * ((p.B * (shared * shared)[:, None]).T @ p.B)
    c = torch.einsum("njr,nj->nr", p.P, p.w[:, None] * shared[None, :] * p.LB)  # (N, r)
    ck = torch.zeros(p.n_groups, p.LD.shape[1], dtype=shared.dtype, device=shared.device).index_add_(0, p.gidx, c)
    return _psd_solve(H, ck.T).T / p.Wk[:, None]


def _shared_step(p: _Problem, heads: torch.Tensor) -> torch.Tensor:
    """Exact minimiser over the shared vector given the heads.

    Side d (heads b'_k): ``u = H^+ c`` with ``H = G o B^T diag(sum_k W_k b'_k o b'_k) B``
    ``(r, r)`` and ``c = sum_i w_i P_i^T (b'_g(i) o b_i)`` ``(r,)``.
    Side b (heads d'_k): per output row j,
    ``v_j = sum_i w_i b_ij c_j(d'_g(i), d_i) / sum_k W_k c_j(d'_k, d'_k)``; the
    denominator is ``diag(B (G o S) B^T)`` with ``S = sum_k W_k d'_k d'_k^T``.
    """
    if p.side == "d":
        s = (p.Wk[:, None] * heads * heads).sum(0)
        H = p.G * ((p.B * s[:, None]).T @ p.B)
        c = torch.einsum("njr,nj->r", p.P, p.w[:, None] * heads[p.gidx] * p.LB)
        return _psd_solve(H, c[:, None])[:, 0]
    Pd = torch.einsum("njr,nr->nj", p.P, heads[p.gidx])
    num = (p.w[:, None] * p.LB * Pd).sum(0)
    S = (p.Wk[:, None, None] * heads[:, :, None] * heads[:, None, :]).sum(0)
    den = ((p.B @ (p.G * S)) * p.B).sum(1)
    return _safe_divide(num, den)


def _expanded_loss(p: _Problem, shared: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i (||dW'_g||^2 - 2 <dW'_g, dW_i>) + energy`` through the Gram forms (differentiable).

    Cost ``O(d_out r^2 + N d_out r)`` per call; exact up to cancellation when the
    loss is tiny relative to the energy (the reported losses use :func:`vera_objective`).
    """
    if p.side == "d":
        fit = (p.Wk[:, None] * heads * heads * _c_self(p.B, p.G, shared)[None, :]).sum()
        cross = (p.w[:, None] * heads[p.gidx] * p.LB * (p.P @ shared)).sum()
    else:
        S = (p.Wk[:, None, None] * heads[:, :, None] * heads[:, None, :]).sum(0)
        fit = (shared * shared * ((p.B @ (p.G * S)) * p.B).sum(1)).sum()
        cross = (p.w[:, None] * shared[None, :] * p.LB * torch.einsum("njr,nr->nj", p.P, heads[p.gidx])).sum()
    return fit - 2 * cross + p.energy


def _shared_side(p: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """(the tasks' vectors on the shared side, those on the head side)."""
    return (p.LD, p.LB) if p.side == "d" else (p.LB, p.LD)


def _gauge_scale(p: _Problem) -> tuple[float, torch.Tensor]:
    own, _ = _shared_side(p)
    rms = math.sqrt(float((p.w * (own * own).sum(1)).sum() / p.w.sum()))
    return rms, (p.w[:, None] * own).sum(0)


def _init_shared(p: _Problem, init: str, seed: int) -> torch.Tensor:
    """The shared vector to start from (before the first heads step).

    ``"svd"``: the top right singular vector of the stacked
    ``sqrt(w_i) ||other_i|| own_i`` (own = the tasks' shared-side vectors, other =
    their head-side vectors), scaled to their weighted RMS norm, sign towards
    their weighted sum; ``"mean"``: their weighted mean (``"svd"`` when that is
    ~0); ``"random"``: N(0, 1) entries from ``torch.Generator().manual_seed(seed)``, same scale.
    """
    own, other = _shared_side(p)
    rms, total = _gauge_scale(p)
    if init == "mean":
        mean = total / p.w.sum()
        if float(mean.norm()) > 1e-9 * max(rms, 1e-300):
            return mean
        init = "svd"
    if init == "svd":
        M = p.w.sqrt()[:, None] * other.norm(dim=1)[:, None] * own
        if float(M.abs().max()) == 0:
            return torch.zeros_like(own[0])
        v = torch.linalg.svd(M, full_matrices=False)[2][0]
        return v * rms * (-1.0 if float(v @ total) < 0 else 1.0)
    if init == "random":
        gen = torch.Generator().manual_seed(int(seed))
        v = torch.randn(own.shape[1], generator=gen, dtype=_F64).to(device=own.device, dtype=own.dtype)
        return v * rms / max(own.shape[1], 1) ** 0.5
    raise ValueError(f"init must be 'svd', 'mean' or 'random', got {init!r}")


def _fix_gauge(p: _Problem, shared: torch.Tensor, heads: torch.Tensor):
    """(b, d) and (c b, d / c) give the same update: scale the shared vector to the tasks' weighted RMS
    norm of that side, with sign towards their weighted sum; the heads take the inverse scale."""
    rms, total = _gauge_scale(p)
    norm = float(shared.norm())
    if norm == 0 or rms == 0:
        return shared, heads
    scale = rms / norm * (-1.0 if float(shared.double() @ total.double()) < 0 else 1.0)
    return shared * scale, heads / scale


@dataclass
class VeraModuleSolution:
    """Solution at one module. Side ``"d"``: ``shared`` lambda_d' ``(r,)``, ``heads`` lambda_b'_k ``(K, d_out)``;
    side ``"b"``: ``shared`` lambda_b' ``(d_out,)``, ``heads`` lambda_d'_k ``(K, r)``.

    ``loss`` (float64, by :func:`vera_objective`), ``floor`` (:func:`vera_floor`,
    a lower bound, generally not reached), ``energy`` = ``sum_i w_i ||dW_i||^2``.
    ``history``: ALS - the loss at the start and after every iteration; Adam -
    the loss before every step. ``steps``: ALS iterations or Adam steps.
    """

    side: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    energy: float
    history: list[float]
    steps: int
    seconds: float = 0.0

    @property
    def relative_loss(self) -> float:
        return _ratio(self.loss, self.energy)


def _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device):
    if side not in VERA_SIDES:
        raise ValueError(f"side must be one of {VERA_SIDES}, got {side!r}")
    _check_vectors(lambda_b, lambda_d, vera_A, vera_B, module)
    w, gidx = _check_grouping(weights, group_index, n_groups, lambda_b.shape[0], module)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _make_problem(lambda_b, lambda_d, vera_A, vera_B, w, gidx, n_groups, side, device), w, gidx


def _finish(p, shared, heads, lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, steps, start):
    shared, heads = _fix_gauge(p, shared.to(_F64), heads.to(_F64))
    shared, heads = shared.cpu(), heads.cpu()
    cpu = [t.detach().cpu() for t in (lambda_b, lambda_d, vera_A, vera_B)]
    loss = vera_objective(shared, heads, *cpu, w, gidx, p.side)
    root = gram_root(cpu[2])
    floor, energy = _floor_and_energy(cpu[0].to(_F64), cpu[1].to(_F64), cpu[3].to(_F64), root, w, torch.as_tensor(gidx),
                                      p.n_groups)
    dtype = lambda_b.dtype if lambda_b.is_floating_point() else torch.float32
    return VeraModuleSolution(p.side, shared.to(dtype), heads.to(dtype), loss, floor, energy, history, steps,
                              time.perf_counter() - start)


def solve_vera_als(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    side: str = "d",
    module: str = "<module>",
    *,
    max_iters: int = 2000,
    tol: float = 1e-10,
    target_relative: float | None = None,
    init: str = "svd",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> VeraModuleSolution:
    """VeRA HydraOpt at one module by alternating least squares; on the vectors, float64.

    Inputs: ``lambda_b`` ``(N, d_out)``, ``lambda_d`` ``(N, r)``, projections
    ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``, weights w_i > 0 and
    ``group_index[i]`` in ``0..n_groups-1``. The loss is quadratic in each
    side given the other, so each half-step is an exact least-squares solve:

    * side ``"d"``: given lambda_d' = u, every head's lambda_b'_k has a closed
      form per output row; given the heads, u solves an ``r x r`` system
      ``(G o B^T diag(s) B) u = c`` (pseudo-inverse when singular);
    * side ``"b"``: given lambda_b' = v, each lambda_d'_k solves an ``r x r``
      system (one matrix for all heads); given the heads, v has a closed form
      per output row.

    The loss never increases. Start: the shared vector from ``init`` -
    ``"svd"`` (top right singular vector of the stacked ``sqrt(w_i)
    ||other_i|| own_i``, own = the tasks' shared-side vectors), ``"mean"``
    (their weighted mean) or ``"random"`` (seeded by ``seed``) - then a heads step.
    Stops after ``max_iters`` iterations, when an iteration lowers
    the loss by less than ``tol`` (relative), or when ``loss / energy <=
    target_relative`` (or ``<= 1e-13``: exact). Cost per iteration
    ``O(d_out r^2 + N d_out r + r^3)`` after an ``O(N d_out r^2)`` set-up.
    ``device``: ``None`` = CUDA when available. Returns vectors on the CPU in
    the input dtype. Gauge: ``(c b, d / c)`` gives the same update as ``(b, d)``,
    so the shared vector is scaled to the weighted RMS norm of the tasks'
    vectors on that side, with sign towards their weighted sum, and the heads
    take the inverse scale (one adapter is then returned as it was).
    """
    start = time.perf_counter()
    p, w, gidx = _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device)
    energy = max(p.energy, 1e-300)
    stop_at = max(float(target_relative or 0.0), 1e-13) * energy
    shared = _init_shared(p, init, seed)
    heads = _heads_step(p, shared)
    loss = float(_expanded_loss(p, shared, heads))
    history = [loss]
    it = 0
    for it in range(1, max_iters + 1):
        if loss <= stop_at:
            it -= 1
            break
        shared = _shared_step(p, heads)
        heads = _heads_step(p, shared)
        new = float(_expanded_loss(p, shared, heads))
        history.append(new)
        if loss - new < tol * max(loss, 1e-300):
            loss = min(loss, new)
            break
        loss = new
    return _finish(p, shared, heads, lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, it, start)


def solve_vera_adam(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    side: str = "d",
    module: str = "<module>",
    *,
    max_steps: int = 4000,
    lr: float = 0.02,
    tol: float = 1e-7,
    check_every: int = 25,
    lr_decay: float = 0.3,
    max_decays: int = 6,
    target_relative: float | None = None,
    init: str = "svd",
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> VeraModuleSolution:
    """VeRA HydraOpt at one module by Adam on the shared vector and the heads; on the vectors.

    Same inputs and objective as :func:`solve_vera_als`. The loss is the Gram
    expansion ``sum_i w_i (||dW'_g||^2 - 2 <dW'_g, dW_i>) + energy`` (cost
    ``O(d_out r^2 + N d_out r)`` per step, no dense dW), divided by the energy
    for conditioning; ``history`` records the unnormalised loss before every step.

    * Start: the same point as ALS after its first heads step (``init``, then
      the closed-form heads), so the two solvers are comparable.
    * ``torch.optim.Adam`` with step sizes ``lr * rms`` of each initial tensor;
      every ``check_every`` steps, if the best loss improved by less than
      ``tol`` (relative) the step sizes are multiplied by ``lr_decay`` (at most
      ``max_decays`` times, then it stops); stops at ``max_steps`` or once
      ``loss / energy <= target_relative``. Returns the best parameters seen at a check.
    * ``device``: ``None`` = CUDA when available; ``dtype`` of the iterations
      (float32); the reported loss is re-evaluated in float64.
    """
    start = time.perf_counter()
    p64, w, gidx = _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device)
    shared0 = _init_shared(p64, init, seed)
    heads0 = _heads_step(p64, shared0)
    p = p64.to(dtype)
    energy = max(p.energy, 1e-300)
    shared = torch.nn.Parameter(shared0.to(dtype).clone())
    heads = torch.nn.Parameter(heads0.to(dtype).clone())
    rms_s = float(shared0.pow(2).mean().sqrt()) or 1.0
    rms_h = float(heads0.pow(2).mean().sqrt()) or rms_s
    optim = torch.optim.Adam([{"params": [shared], "lr": lr * rms_s}, {"params": [heads], "lr": lr * rms_h}])
    with torch.no_grad():
        best = float(_expanded_loss(p, shared, heads))
    best_params = (shared.detach().clone(), heads.detach().clone())
    target = float(target_relative) * energy if target_relative is not None else -math.inf
    previous_best, decays, step = best, 0, 0
    losses: list[torch.Tensor] = []
    for step in range(1, max_steps + 1):
        if best <= target:
            step -= 1
            break
        optim.zero_grad(set_to_none=True)
        loss = _expanded_loss(p, shared, heads)
        (loss / energy).backward()
        losses.append(loss.detach())
        optim.step()
        if step % check_every and step != max_steps:
            continue
        with torch.no_grad():
            current = float(_expanded_loss(p, shared, heads))
        if current < best:
            best = current
            best_params = (shared.detach().clone(), heads.detach().clone())
        improvement = (previous_best - best) / max(abs(previous_best), 1e-300)
        previous_best = best
        if best <= target:
            break
        if improvement < tol:
            if decays >= max_decays:
                break
            decays += 1
            for group in optim.param_groups:
                group["lr"] *= lr_decay
    history = torch.stack(losses).double().cpu().tolist() if losses else []
    return _finish(p64, best_params[0], best_params[1], lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, step, start)


@dataclass(frozen=True)
class VeraSolver:
    """A registered VeRA HydraOpt solver: ``fn(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, **options)``."""

    name: str
    fn: Callable[..., VeraModuleSolution]
    reference: str
    description: str


VERA_SOLVERS: dict[str, VeraSolver] = {
    "als": VeraSolver(
        "als", solve_vera_als,
        "alternating least squares (block coordinate descent) on the bilinear VeRA update; "
        "Kopiczko et al. (2024), VeRA, arXiv:2310.11454",
        "exact least-squares half-steps: per-row closed form for lambda_b, an r x r system for lambda_d",
    ),
    "adam": VeraSolver(
        "adam", solve_vera_adam,
        "Ceritli et al. (2025), HydraOpt, arXiv:2507.17706; Kingma & Ba (2015), Adam, arXiv:1412.6980",
        "the paper's iterative optimisation, on the VeRA vectors, factored loss",
    ),
}


# ============================================================================= results and the entry point


@dataclass
class VeraModuleResult:
    """VeRA HydraOpt at one module (see :class:`VeraModuleSolution` for ``shared`` / ``heads`` by side).

    ``loss``, ``floor`` (lower bound: the within-group spread) and ``energy`` are
    weighted sums of squares; ``weights`` ``(N,)`` are the w_i used.
    ``history`` / ``steps`` are those of the kept start; ``start_losses`` the
    final loss of every start (``init`` first, then the random restarts);
    ``seconds`` the time of all starts.
    """

    module: str
    side: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    energy: float
    weights: torch.Tensor
    history: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    start_losses: list[float] = field(default_factory=list)

    @property
    def relative_loss(self) -> float:
        return _ratio(self.loss, self.energy)

    @property
    def storage(self) -> int:
        """Numbers stored: the shared vector once plus the K head vectors (projections come from the key)."""
        return int(self.shared.numel() + self.heads.numel())

    def vectors(self, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lambda_b (d_out,), lambda_d (r,))`` of head index ``head``."""
        if self.side == "d":
            return self.heads[head], self.shared
        return self.shared, self.heads[head]


@dataclass
class VeraHydraResult:
    """VeRA HydraOpt over the modules of a VeRA adapter set.

    ``modules`` maps module -> :class:`VeraModuleResult`; ``task_to_head`` maps
    every task to one of ``head_names``. ``vectors(task, module)`` gives the
    VeRA vectors that task runs; :meth:`save_peft` writes standard PEFT VeRA
    directories (per task or per head) with the source's ``VeraConfig``.
    """

    side: str
    solver: str
    weighting: str
    tasks: list[str]
    head_names: list[str]
    task_to_head: dict[str, str]
    modules: dict[str, VeraModuleResult]
    source: _VeraSource = field(repr=False)
    grouping: str = ""
    metadata: dict[str, dict] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- summaries
    @property
    def base_model(self) -> str | None:
        return self.source.base_model

    @property
    def n_heads(self) -> int:
        return len(self.head_names)

    @property
    def total_loss(self) -> float:
        return float(sum(m.loss for m in self.modules.values()))

    @property
    def total_floor(self) -> float:
        """Sum of the modules' lower bounds (within-group spread of dW); generally not reached."""
        return float(sum(m.floor for m in self.modules.values()))

    @property
    def total_energy(self) -> float:
        return float(sum(m.energy for m in self.modules.values()))

    @property
    def relative_loss(self) -> float:
        """``total_loss / sum_i w_i ||dW_i||^2`` (summed over modules)."""
        return _ratio(self.total_loss, self.total_energy)

    @property
    def relative_floor(self) -> float:
        return _ratio(self.total_floor, self.total_energy)

    @property
    def storage(self) -> int:
        """Numbers stored, counted from the tensors: per module the shared vector once and K head vectors."""
        return int(sum(m.storage for m in self.modules.values()))

    @property
    def storage_per_module(self) -> dict[str, int]:
        return {name: m.storage for name, m in self.modules.items()}

    def relative_storage(self) -> float:
        """Storage divided by that of keeping every task's VeRA vectors (``N (d_out + r)`` per module)."""
        total = 0
        for m in self.modules.values():
            d_out = m.heads.shape[1] if self.side == "d" else m.shared.shape[0]
            r = m.shared.shape[0] if self.side == "d" else m.heads.shape[1]
            total += len(self.tasks) * (d_out + r)
        return self.storage / total

    @property
    def loss_history(self) -> dict[str, list[float]]:
        return {name: m.history for name, m in self.modules.items()}

    def summary(self) -> dict:
        """JSON-ready numbers: loss, relative loss, floor, energy, storage, heads, iterations."""
        return {
            "side": self.side, "solver": self.solver, "weighting": self.weighting, "heads": self.n_heads,
            "grouping": self.grouping, "loss": self.total_loss, "relative_loss": self.relative_loss,
            "floor": self.total_floor, "relative_floor": self.relative_floor, "energy": self.total_energy,
            "storage": self.storage, "relative_storage": self.relative_storage(),
            "steps": {name: m.steps for name, m in self.modules.items()},
        }

    # ---------------------------------------------------------------- per-task views
    def head_index(self, task: str) -> int:
        if task not in self.task_to_head:
            raise KeyError(f"unknown task {task!r}")
        return self.head_names.index(self.task_to_head[task])

    def vectors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lambda_b (d_out,), lambda_d (r,))`` that ``task`` runs at ``module``."""
        return self.modules[module].vectors(self.head_index(task))

    def task_vectors(self, task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (lambda_b, lambda_d)}`` of ``task`` (a full VeRA adapter)."""
        return {m: self.vectors(task, m) for m in self.modules}

    def head_vectors(self, head: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (lambda_b, lambda_d)}`` of head ``head`` (by name)."""
        if head not in self.head_names:
            raise KeyError(f"unknown head {head!r}; heads: {self.head_names}")
        k = self.head_names.index(head)
        return {m: r.vectors(k) for m, r in self.modules.items()}

    def delta(self, task: str, module: str) -> torch.Tensor:
        """Dense reconstructed dW ``(d_out, d_in)`` of ``task`` (forms the full matrix)."""
        lb, ld = self.vectors(task, module)
        info = self.source.module_info[module]
        vA, vB = self.source.projections
        return vera_delta(lb, ld, vA[:, : info.d_in].to(lb.dtype), vB[: info.d_out].to(lb.dtype))

    def to_adapter_set(self, by: str = "task"):
        """A VeRA :class:`~hydralib.adapters.AdapterSet`: one adapter per task (``by="task"``) or per head (``"head"``)."""
        if by == "task":
            vectors = {t: self.task_vectors(t) for t in self.tasks}
            metadata = {t: {**self.metadata.get(t, {}), "head": self.task_to_head[t]} for t in self.tasks}
        elif by == "head":
            vectors = {h: self.head_vectors(h) for h in self.head_names}
            metadata = {h: {"tasks": [t for t in self.tasks if self.task_to_head[t] == h]} for h in self.head_names}
        else:
            raise ValueError(f"by must be 'task' or 'head', got {by!r}")
        return _vera_set(self.source, vectors, metadata)

    def save_peft(self, root: str | Path, by: str = "task", overwrite: bool = False,
                  dtype: torch.dtype | None = None) -> dict[str, Path]:
        """Write ``root/<task>`` (or ``root/<head>``) as standard PEFT VeRA directories; returns ``{name: path}``.

        Each holds the source's ``VeraConfig`` (same ``projection_prng_key`` and
        ``r``; projections stored when the source's ``save_projection`` is true)
        and the vectors; stock ``PeftModel.from_pretrained`` loads them.
        ``dtype`` defaults to the source's stored dtype. Written atomically.
        """
        aset = self.to_adapter_set(by)
        root = Path(root)
        return {name: aset.save_peft(name, root / name, overwrite=overwrite, dtype=dtype) for name in aset.tasks}


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
    heads: as in :func:`~.hydraopt.hydraopt` (:func:`~.hydraopt.resolve_groups`):
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


# ============================================================================= synthetic VeRA sets


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

    from ..adapters import AdapterSet, ModuleInfo
    from ..peft_io import vera_projections

    names = list(task_names) if task_names is not None else [f"task{i}" for i in range(n_tasks)]
    if len(names) != n_tasks or len(set(names)) != n_tasks:
        raise ValueError(f"random_vera_adapters: need {n_tasks} distinct task names, got {names}")
    if groups is None:
        if group_b or group_d:
            raise ValueError("random_vera_adapters: group_b / group_d need groups=")
        groups = [0] * n_tasks
    groups = list(groups)
    if len(groups) != n_tasks:
        raise ValueError(f"random_vera_adapters: {len(groups)} group labels for {n_tasks} tasks")
    for name, f_common, f_group in (("lambda_b", shared_b, group_b), ("lambda_d", shared_d, group_d)):
        if min(f_common, f_group) < 0 or f_common + f_group > 1:
            raise ValueError(f"random_vera_adapters: fractions of {name} must be >= 0 and sum to <= 1")
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
