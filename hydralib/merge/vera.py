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
  :func:`~.baselines.merge_deltas`, seeded) on the stacked ``lambda_b`` and
  the stacked ``lambda_d`` of every module (vector space; the result is a
  VeRA adapter). :func:`merge_vera_dense` is the dW-space reference: the same
  methods on the dense updates, stored as a LoRA (it is not a VeRA adapter).
* :func:`vector_average_gap`: how far averaging the vectors is from averaging dW.
* :func:`vera_hydraopt`: one vector shared by all tasks and one vector per
  head (``side="d"``: shared ``lambda_d'`` (r,), heads ``lambda_b'_k``
  (d_out,); ``side="b"`` the mirror), fitted to
  ``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` module by module by alternating
  least squares or Adam (:data:`VERA_SOLVERS`).

The per-module algebra (Gram forms, never a dense dW), the objective, its
floor and the two solvers live in :mod:`hydralib.merge.vera_solvers`; their
public names are importable from here too (:func:`gram_root`,
:func:`masked_norms_sq`, :func:`vera_delta`, :func:`vera_objective`,
:func:`vera_floor`, :func:`solve_vera_als`, :func:`solve_vera_adam`,
:class:`VeraModuleSolution`, :data:`VERA_SOLVERS`).

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

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import AdapterError
from ..synthetic import derive_seed
from .baselines import MERGE_METHODS, merge_adapters, merge_deltas
from .hydraopt import Grouping, resolve_groups, task_weights
from .vera_solvers import (
    _F64,
    VERA_SIDES,
    VERA_SOLVERS,
    VeraModuleSolution,
    VeraSolver,
    _ratio,
    gram_root,
    masked_norms_sq,
    solve_vera_adam,
    solve_vera_als,
    vera_delta,
    vera_floor,
    vera_objective,
)

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

