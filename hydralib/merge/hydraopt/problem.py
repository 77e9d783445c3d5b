"""The per-module HydraOpt problem shared by both solvers: checks, padded factors, the objective on the factors.

Side-A orientation throughout: task i has A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``
and a scaling s_i; the unknowns are ``A'`` ``(r', d_in)`` and heads ``B'_k``
``(d_out, r')``. :class:`ModuleSolution` is what a solver returns at one
module; :func:`objective` evaluates ``sum_i w_i ||B'_g(i) A' - s_i B_i A_i||_F^2``
through ``r x r`` Grams (no ``d_out x d_in`` matrix). Side B is solved as side
A on :func:`transpose_factors`. :func:`_as_adapter_set` and
:func:`_module_factors` turn the caller's adapters into per-module factor lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ...errors import AdapterError
from ..lowrank import check_factors
from ..products import matmul64, to_float64

__all__ = ["ModuleSolution", "check_grouping", "objective", "transpose_factors"]


@dataclass
class ModuleSolution:
    """Solution at one module, in side-A orientation.

    ``shared`` ``(r', d_in)`` is A', ``heads`` ``(K, d_out, r')`` the B'_k.
    ``loss`` is the objective evaluated at (shared, heads) in factored form
    (float64); ``floor = spread + truncation`` the Eckart-Young minimum for
    this grouping and rank. ``eigenvalues`` ``(min(r', R),)``: the top
    eigenvalues of ``(SQ)^T (SQ)`` ``(R, R)`` (the top squared singular values
    of S), descending; the rest of the spectrum is not computed (their sum is
    ``truncation``). ``history`` holds the Adam losses per step
    (``None`` for the exact solver); ``steps`` how many steps Adam ran.
    ``method``: how the exact solution was found, ``"factored"`` (block
    Krylov on the factors) or ``"householder"`` (QR of the stacked A_i and an
    eigensolver on ``(SQ)^T (SQ)``); empty for Adam.
    """

    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    spread: float
    truncation: float
    energy: float
    eigenvalues: torch.Tensor | None = None
    history: list[float] | None = None
    steps: int | None = None
    seconds: float = 0.0
    method: str = ""


def check_grouping(weights, group_index, n_groups: int, n: int, module: str) -> tuple[torch.Tensor, list[int]]:
    """Task weights ``(n,)`` (float64, positive, finite) and a head index per task using exactly heads
    ``0..n_groups-1``; returns ``(weights, group_index)``. Errors name ``module``. Shared by the LoRA and
    VeRA solvers."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (n,):
        raise AdapterError(f"module {module}: {tuple(weights.shape)} weights for {n} tasks")
    if not (torch.isfinite(weights).all() and (weights > 0).all()):
        raise AdapterError(f"module {module}: task weights must be positive and finite, got {weights.tolist()}")
    group_index = [int(g) for g in group_index]
    if len(group_index) != n:
        raise AdapterError(f"module {module}: {len(group_index)} head assignments for {n} tasks")
    if n_groups < 1 or sorted(set(group_index)) != list(range(n_groups)):
        raise AdapterError(f"module {module}: heads {sorted(set(group_index))} must be exactly 0..{n_groups - 1}, each used")
    return weights, group_index


def _check_problem(As, Bs, scalings, weights, group_index, n_groups, rank, module, check=True):
    if check:  # False: the caller has run check_factors on these factors (hydraopt() does, naming the tasks)
        check_factors(As, Bs, scalings, module)
    weights, group_index = check_grouping(weights, group_index, n_groups, len(As), module)
    if int(rank) < 1:
        raise AdapterError(f"module {module}: rank r' must be >= 1, got {rank}")
    return weights, group_index


def _pad(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    if x.shape[dim] >= size:
        return x.narrow(dim, 0, size)
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _padded(As, Bs, dtype=None):
    """Stack factors padded to the largest rank: A ``(N, r_max, d_in)``, B ``(N, d_out, r_max)`` (zero rows/columns change no delta).

    Copied once into fresh tensors, in ``dtype`` (default: the factors' dtype).
    """
    r_max = max(int(A.shape[0]) for A in As)
    dtype = dtype if dtype is not None else As[0].dtype
    device = As[0].device
    A_pad = torch.empty((len(As), r_max, As[0].shape[1]), dtype=dtype, device=device)
    B_pad = torch.empty((len(Bs), Bs[0].shape[0], r_max), dtype=dtype, device=device)
    if all(int(A.shape[0]) == r_max and A.dtype == dtype for A in As) and all(B.dtype == dtype for B in Bs):
        return torch.stack(list(As), out=A_pad), torch.stack(list(Bs), out=B_pad)  # one copy each, no padding
    for i, (A, B) in enumerate(zip(As, Bs)):
        r = int(A.shape[0])
        A_pad[i, :r].copy_(A)
        B_pad[i, :, :r].copy_(B)
        if r < r_max:
            A_pad[i, r:].zero_()
            B_pad[i, :, r:].zero_()
    return A_pad, B_pad


def _batched_objective(shared, heads, A_pad, B_pad, s, w, gidx, group_w, const):
    """Objective on padded batched factors (differentiable; see :func:`objective`)."""
    AA = shared @ shared.T  # (r', r')
    BB = heads.transpose(1, 2) @ heads  # (K, r', r')
    fit = (BB * AA).sum(dim=(1, 2))  # ||B'_k A'||^2, (K,)
    X = torch.matmul(shared, A_pad.transpose(1, 2))  # A' A_i^T, (N, r', r)
    Y = torch.matmul(heads[gidx].transpose(1, 2), B_pad)  # B'_g^T B_i, (N, r', r)
    cross = s * (X * Y).sum(dim=(1, 2))  # <B'_g A', dW_i>, (N,)
    return (group_w * fit).sum() - 2 * (w * cross).sum() + const


def objective(
    shared: torch.Tensor,
    heads: torch.Tensor,
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float],
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
) -> float:
    """``L = sum_i w_i ||heads[g(i)] @ shared - s_i B_i A_i||_F^2``, on the factors, in float64.

    Side-A orientation: ``shared`` ``(r', d_in)``, ``heads`` ``(K, d_out, r')``,
    A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``. Each term is expanded as
    ``||B'A'||^2 - 2 s_i <B'A', B_i A_i> + ||dW_i||^2`` with every inner product
    a trace of ``r x r`` (or ``r' x r``) Grams; no ``d_out x d_in`` matrix is formed.
    """
    f64 = torch.float64
    device = shared.device
    w = torch.as_tensor(weights, dtype=f64, device=device)
    group_index = [int(g) for g in group_index]
    gidx = torch.as_tensor(group_index, device=device)
    s = torch.as_tensor([float(x) for x in scalings], dtype=f64, device=device)
    A_pad, B_pad = _padded([A.to(device) for A in As], [B.to(device) for B in Bs], f64)  # (N, r, d_in), (N, d_out, r)
    S, H = to_float64(shared), to_float64(heads)
    # every product below is float64 (matmul64); the terms are as in _batched_objective
    norms = s**2 * (matmul64(A_pad, A_pad.mT) * matmul64(B_pad.mT, B_pad)).to(device).sum(dim=(1, 2))  # ||dW_i||^2
    fit = (matmul64(H.mT, H) * matmul64(S, S.T)[None]).to(device).sum(dim=(1, 2))  # ||B'_k A'||^2, (K,)
    X = matmul64(S, A_pad.mT).to(device)  # A' A_i^T, (N, r', r)
    H_g = H if group_index == list(range(H.shape[0])) else H[gidx]
    Y = matmul64(H_g.mT, B_pad).to(device)  # B'_g^T B_i, (N, r', r)
    cross = s * (X * Y).sum(dim=(1, 2))  # <B'_g A', dW_i>
    group_w = torch.zeros(H.shape[0], dtype=f64, device=device).index_add_(0, gidx, w)
    value = (group_w * fit).sum() - 2 * (w * cross).sum() + (w * norms).sum()
    return max(float(value), 0.0)


def transpose_factors(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Factors of ``dW^T = s A^T B^T``: new A_i = B_i^T ``(r, d_out)``, new B_i = A_i^T ``(d_in, r)`` (for side B)."""
    return [B.T for B in Bs], [A.T for A in As]


def _as_adapter_set(adapters, metadata=None, base_model=None):
    """An :class:`~hydralib.adapters.AdapterSet` from a set or from ``{task: {module: (A, B, s)}}``."""
    from ...adapters import AdapterSet

    if isinstance(adapters, AdapterSet):
        return adapters
    if isinstance(adapters, Mapping):
        return AdapterSet.from_factors(adapters, base_model=base_model, metadata=metadata)
    raise TypeError(f"adapters must be an AdapterSet or {{task: {{module: (A, B, scaling)}}}}, got {type(adapters).__name__}")


def _module_factors(aset, module, device=None, dtype=None):
    As, Bs, ss = [], [], []
    for task in aset.tasks:
        A, B, s = aset.factors(task, module)
        As.append(A.to(device=device, dtype=dtype))
        Bs.append(B.to(device=device, dtype=dtype))
        ss.append(float(s))
    return As, Bs, ss
