"""Baselines for VeRA: task arithmetic, TIES, DARE on the trainable vectors (a VeRA adapter), and in dW space (a LoRA).

:func:`merge_vera_vectors` merges the stacked ``lambda_b`` and ``lambda_d`` of
every module with ``peft.utils.merge_utils`` (through
:func:`~hydralib.merge.baselines.merge_deltas`, seeded); the result
:class:`MergedVeRA` is a VeRA adapter. :func:`merge_vera_dense` is the
dW-space reference: the same methods on the dense updates, stored as a LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ...errors import AdapterError
from ..baselines import MERGE_METHODS, merge_adapters, merge_deltas
from .algebra import vera_delta
from .sets import _as_vera_set, _select_modules, _source, _task_weight_list, _VeraSource, _vera_set

__all__ = ["merge_vectors", "MergedVeRA", "merge_vera_vectors", "merge_vera_dense"]


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

    On the vectors (not dW). Delegates to :func:`~hydralib.merge.baselines.merge_deltas` on
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

    Per module, with the names of :data:`~hydralib.merge.baselines.MERGE_METHODS`
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
    """Reference merge of VeRA adapters in dW space, returned as a LoRA (:class:`~hydralib.merge.baselines.MergedLoRA`).

    ``dW = lam * merge(dW_1..N; weights)`` with ``dW_i = diag(b_i) B diag(d_i) A``,
    by :func:`~hydralib.merge.baselines.merge_adapters` on the VeRA set's factors
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
