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
truncation``. Everything here works on the factors (see :mod:`.lowrank`):
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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import AdapterError
from .lowrank import (
    SUBSPACE_MIN_SIZE,
    _fix_signs,
    block_sums,
    check_factors,
    delta_inner_products,
    delta_norms_sq,
    factored_top_eigen,
    stacked_gram,
    top_eigen,
)
from .products import empty_buffer, gram64, matmul, matmul64, matmul64_rows, to_float64

__all__ = [
    "ModuleSolution",
    "solve_exact",
    "solve_adam",
    "objective",
    "transpose_factors",
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
    "hydraopt",
]

SIDES = ("A", "B")


# ============================================================================= per-module solvers (side A orientation)


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

    Copied once into :func:`~.products.empty_buffer` memory, in ``dtype``
    (default: the factors' dtype).
    """
    r_max = max(int(A.shape[0]) for A in As)
    dtype = dtype if dtype is not None else As[0].dtype
    device = As[0].device
    A_pad = empty_buffer((len(As), r_max, As[0].shape[1]), dtype, device)
    B_pad = empty_buffer((len(Bs), Bs[0].shape[0], r_max), dtype, device)
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


def _floor_problem(As, Bs, scalings, weights, group_index, n_groups, rank):
    """Shared work of both solvers: the Gram form of S, its top-r' eigenpairs, and the truncation.

    Returns ``(gram, values (min(r', R),), V (R, min(r', R)), truncation)``;
    :func:`~.lowrank.top_eigen` computes only the top r' eigenpairs (subspace
    iteration when R >= 256 and r' <= R / 4, else an eigensolver) and
    ``truncation`` = ``trace(H) - sum`` of the top r' eigenvalues (or the sum
    of the others when the full spectrum was computed).
    """
    gram = stacked_gram(As, Bs, scalings, weights, group_index, n_groups)
    eig = top_eigen(gram.H, rank)
    return gram, eig.values, eig.vectors, eig.tail


#: Factor dtypes the factored exact path works in (others take the Householder path).
_FACTORED_DTYPES = (torch.float32, torch.float64)


def _solve_exact_factored(As, Bs, scalings, weights, group_index, n_groups, rank) -> ModuleSolution | None:
    """The exact solution by block Krylov steps on ``M = A_cat^T D A_cat``, on the factors (see :func:`solve_exact`).

    Returns ``None`` (the caller then takes the Householder / eigensolver path)
    when the problem is small (``R = min(d_in, sum r_i) < SUBSPACE_MIN_SIZE`` or
    ``r' > R / 4``), the factors are not float32/float64, or the iteration does
    not converge (:func:`~.lowrank.factored_top_eigen`).
    """
    n = len(As)
    ranks = [int(A.shape[0]) for A in As]
    d_in, d_out = int(As[0].shape[1]), int(Bs[0].shape[0])
    R = min(d_in, sum(ranks))
    dtype = As[0].dtype
    if (dtype not in _FACTORED_DTYPES or any(t.dtype != dtype for t in (*As, *Bs))
            or R < SUBSPACE_MIN_SIZE or 4 * int(rank) > R):
        return None
    rank = int(rank)
    device = As[0].device
    f64 = torch.float64
    # tasks sorted by head (stable), so that the tasks of a head are contiguous and heads come in order 0..K-1
    order = sorted(range(n), key=lambda i: group_index[i])
    sizes = [0] * n_groups
    for i in order:
        sizes[group_index[i]] += 1
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    A_pad, B_pad = _padded([As[i] for i in order], [Bs[i] for i in order])  # (n, r, d_in), (n, d_out, r)
    r = int(A_pad.shape[1])
    A_cat = A_pad.view(n * r, d_in)
    gidx = torch.as_tensor([group_index[i] for i in order], device=device)
    s = torch.as_tensor([float(scalings[i]) for i in order], dtype=f64, device=device)
    w = weights.to(device)[torch.as_tensor(order, device=device)]
    W = torch.zeros(n_groups, dtype=f64, device=device).index_add_(0, gidx, w)
    c = w * s / W[gidx]  # c_i = w_i s_i / W_g(i): M_k = sum_{i in k} c_i B_i A_i

    # per-task energies ||dW_i||^2 = s_i^2 <A_i A_i^T, B_i^T B_i> from float64 r x r Grams
    GA = gram64(A_pad).to(device)
    GB = gram64(B_pad, transpose=True).to(device)
    energy = float((w * s**2 * (GA * GB).sum(dim=(1, 2))).sum())
    del GA

    # D = blockdiag_k(W_k diag(c) B_k^T B_k diag(c)), so that M = sum_k W_k (M_k)^T M_k = A_cat^T D A_cat
    singletons = all(size == 1 for size in sizes)
    spread = 0.0
    if singletons:  # K = N: D_i = w_i s_i^2 B_i^T B_i
        D = ((w * s**2)[:, None, None] * GB).to(dtype)

        def apply_d(Y):
            return torch.bmm(D, Y.view(n, r, -1)).view(n * r, -1)
    else:
        blocks = []
        for k in range(n_groups):
            a, b = starts[k], starts[k + 1]
            rows = slice(a * r, b * r)
            c_rows = c[a:b].repeat_interleave(r)
            if b - a == 1:
                G = GB[a]
            else:  # within-group Grams (in the factors' dtype, as the Householder path): B_i^T B_j and the spread
                Bt = B_pad[a:b].transpose(1, 2).reshape((b - a) * r, d_out)
                G = to_float64(matmul(Bt, Bt.T).to(device))
                del Bt
                A_k = A_cat[rows]
                s_k, w_k = s[a:b], w[a:b]
                GA_k = to_float64(matmul(A_k, A_k.T).to(device))
                ip = block_sums(GA_k.mul_(G), [r] * (b - a)) * s_k[:, None] * s_k[None, :]
                del GA_k
                group_energy = float((w_k * ip.diagonal()).sum())
                spread += max(group_energy - float((w_k[:, None] * w_k[None, :] * ip).sum()) / float(W[k]), 0.0)
            D_k = G.mul(c_rows[:, None]).mul_(c_rows[None, :] * W[k])
            blocks.append((rows, D_k if dtype == f64 else D_k.to(dtype)))
            del G, D_k

        def apply_d(Y):
            out = torch.empty_like(Y)
            for rows, D_k in blocks:
                out[rows] = matmul(D_k, Y[rows])
            return out

    eig = factored_top_eigen(A_cat, apply_d, rank, trace=energy - spread)
    if not eig.converged:
        return None
    shared = _fix_signs(eig.vectors).T.contiguous()  # A' (r', d_in), orthonormal rows
    Y64 = matmul64_rows(A_cat, shared.mT).to(device).view(n, r, rank)  # A_i A'^T, float64

    # heads B'_k = M_k A'^T = sum_{i in k} c_i B_i (A_i A'^T); T = A' M A'^T = sum_k W_k B'_k^T B'_k in float64
    if singletons:
        heads = matmul(B_pad, (s[:, None, None] * Y64).to(dtype))  # (n, d_out, r'): s_i B_i (A_i A'^T)
        T = ((w * s**2)[:, None, None] * (Y64.mT @ GB @ Y64)).sum(dim=0)
    else:
        heads = empty_buffer((n_groups, d_out, rank), dtype, device)
        T = torch.zeros(rank, rank, dtype=f64, device=device)
        for k in range(n_groups):
            a, b = starts[k], starts[k + 1]
            if b - a == 1:
                H = s[a] * (B_pad[a].double() @ Y64[a])
                T += W[k] * s[a] ** 2 * (Y64[a].T @ GB[a] @ Y64[a])
            else:
                H = matmul64(B_pad[a:b], c[a:b, None, None] * Y64[a:b]).to(device).sum(dim=0)
                T += W[k] * (H.T @ H)
            heads[k] = H.to(dtype)
    T = (T + T.T) / 2

    # the objective at (A', ideal heads), exactly: L = energy - 2 tr(T) + tr(T P) with P = A' A'^T (= I up to rounding)
    P = shared.double() @ shared.double().T
    loss = max(energy - 2 * float(T.trace()) + float((T * P).sum()), 0.0)
    # Ritz values of M on span(A'): the generalised eigenvalues of (T, P)
    L, info = torch.linalg.cholesky_ex(P)
    if int(info) == 0:
        Linv_T = torch.linalg.solve_triangular(L, T, upper=False)
        values = torch.linalg.eigvalsh(torch.linalg.solve_triangular(L, Linv_T.T, upper=False))
    else:  # pragma: no cover - A' has orthonormal rows
        values = torch.linalg.eigvalsh(T)
    values = values.flip(0).clamp_min(0)
    truncation = max(energy - spread - float(values.sum()), 0.0)
    return ModuleSolution(
        shared, heads, loss, spread + truncation, spread, truncation, energy, eigenvalues=values.to(dtype),
        method="factored",
    )


def solve_exact(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float],
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    rank: int,
    module: str = "<module>",
    *,
    check: bool = True,
) -> ModuleSolution:
    """Closed-form HydraOpt at one module (side-A orientation), on the factors.

    Inputs: A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``, scalings s_i, weights
    w_i > 0, ``group_index[i]`` in ``0..n_groups-1``, rank r'.

    Large problems (``R = min(d_in, sum r_i) >= SUBSPACE_MIN_SIZE``,
    ``r' <= R / 4``, float32/float64 factors) take the *factored* path
    (``method="factored"``). With ``A_cat`` the stacked A_i and ``D`` the
    block-diagonal ``W_k diag(c) B_k^T B_k diag(c)`` over heads
    (``c_i = w_i s_i / W_k``), ``S^T S = A_cat^T D A_cat``, so its top r'
    eigenvectors come from :func:`~.lowrank.factored_top_eigen`: block Krylov
    steps that each cost two skinny products with ``A_cat`` (no QR of the
    ``(d_in, sum r_i)`` stack, no ``R x R`` matrix), in the factors' dtype,
    until the objective is within ~1e-8 (float32; 1e-14 for float64) of its
    minimum relative to the truncation term. Then ``A'`` = those vectors
    (orthonormal rows), ``B'_k = M_k A'^T = sum_{i in k} c_i B_i (A_i A'^T)``.
    Everything reported is float64: the per-task energies from ``r x r``
    Grams, ``T = A' S^T S A'^T = sum_k W_k B'_k^T B'_k`` from ``Y = A_cat A'^T``
    (float64 products, :func:`~.products.gram64` and :func:`~.products.matmul64_rows`), the loss
    ``energy - 2 tr(T) + tr(T A' A'^T)`` (the objective at A' and those heads;
    the stored heads are them rounded to the factors' dtype, which moves the
    loss only at second order), the eigenvalues as the Ritz values of
    ``(T, A' A'^T)`` and ``truncation = energy - spread - sum`` of them. The
    spread uses within-head Grams in the factors' dtype, as below. When the
    iteration does not converge (a flat spectrum around r'), or for small
    problems, the *Householder* path (``method="householder"``):

    1-2. :func:`~.lowrank.stacked_gram`: ``Q`` ``(d_in, R)`` (kept as Householder
       reflectors, never formed), ``C_i = A_i Q``;
       per group k ``P_k = stack(c_i C_i)`` with ``c_i = w_i s_i / W_k`` and
       ``(M_k Q)^T (M_k Q) = P_k^T (B_k^T B_k) P_k``; ``H = sum_k W_k (.)``
       ``(R, R)`` = ``(SQ)^T (SQ)``; the spread from the within-group inner
       products ``sum_i w_i ||dW_i||^2 - W_k ||M_k||^2``;
    3. V ``(R, min(r', R))`` = top r' eigenvectors of H (:func:`~.lowrank.top_eigen`:
       subspace iteration when R >= 256 and r' <= R / 4, falling back to an
       eigensolver); ``A' = V^T Q^T`` ``(r', d_in)`` (orthonormal rows; ``Q V``
       by applying the reflectors), ``B'_k = B_k (P_k V)`` ``(d_out, r')``;
    4. truncation = sum of the eigenvalues of H beyond r' (``trace(H)`` minus
       the top r'); the loss is re-evaluated from (A', B'_k) by :func:`objective`.

    When ``r' > R`` the extra rows of A' and columns of B'_k are zero. The
    sign of each row of A' (and of the matching head column) is fixed so that
    its largest-magnitude entry is positive on the factored path, and in
    coordinates of Q on the Householder path.

    ``check=False`` skips :func:`~.lowrank.check_factors` (a pass over every
    factor) for a caller that has validated them, as :func:`hydraopt` does.
    """
    start = time.perf_counter()
    weights, group_index = _check_problem(As, Bs, scalings, weights, group_index, n_groups, rank, module, check)
    fast = _solve_exact_factored(As, Bs, scalings, weights, group_index, n_groups, rank)
    if fast is not None:
        fast.seconds = time.perf_counter() - start
        return fast
    gram, values, V, truncation = _floor_problem(As, Bs, scalings, weights, group_index, n_groups, rank)
    shared = _pad(gram.basis.apply(V).T.contiguous(), rank, 0)
    heads = torch.stack([_pad(B_k @ (P_k @ V), rank, 1) for B_k, P_k in zip(gram.lora_b, gram.coords)])
    loss = objective(shared, heads, As, Bs, scalings, weights, group_index)
    spread = gram.spread
    return ModuleSolution(
        shared, heads, loss, spread + truncation, spread, truncation, gram.energy, eigenvalues=values,
        seconds=time.perf_counter() - start, method="householder",
    )


def solve_adam(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float],
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    rank: int,
    module: str = "<module>",
    *,
    max_steps: int = 3000,
    lr: float = 0.05,
    tol: float = 1e-6,
    check_every: int = 25,
    lr_decay: float = 0.3,
    max_decays: int = 4,
    target_loss: float | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    floor: ModuleSolution | None = None,
    check: bool = True,
) -> ModuleSolution:
    """Iterative HydraOpt at one module (side-A orientation): Adam on A', B'_k.

    On the factors: A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``; returns A'
    ``(r', d_in)`` and heads ``(K, d_out, r')`` on the CPU.

    * Loss: :func:`objective`'s expansion through ``r x r`` Grams (never a dense
      dW), divided by the total energy ``sum_i w_i ||dW_i||^2`` for
      conditioning; ``history`` records the unnormalised loss of every step
      (the loss of the parameters *before* that step's update).
    * Initialisation (the paper's): ``A'_0 = sum_i (w_i / sum_j w_j) A_i`` (the
      weighted mean lora_a; ranks padded with zero rows), ``B'_k0 = sum_{i in k}
      (w_i / W_k) s_i B_i`` (the weighted group mean of the scaled lora_b). If
      r' < r the first r' rows / columns are kept; if r' > r, A'_0 gets extra
      rows drawn N(0, rms(A'_0)^2) from ``torch.Generator().manual_seed(seed)``
      and B'_0 zero columns.
    * Optimiser: ``torch.optim.Adam`` with a step size relative to each
      parameter's scale: ``lr * rms(A'_0)`` for A' and ``lr * rms(B'_0)`` for the
      heads. Every ``check_every`` steps, if the best loss improved by less than
      ``tol`` (relative), the step sizes are multiplied by ``lr_decay`` (at most
      ``max_decays`` times, then it stops). It also stops at ``max_steps`` or
      once the loss is ``<= target_loss``. The best parameters seen at a check are returned.
    * ``device``: ``None`` = CUDA when available, else CPU. Works in the
      factors' dtype (float32 by default); the reported ``loss`` is re-evaluated
      in float64.
    * ``floor``: an exact :class:`ModuleSolution` to copy the floor terms from
      (otherwise they are computed here, which costs one exact solve; the
      returned ``seconds`` never include it).
    """
    weights, group_index = _check_problem(As, Bs, scalings, weights, group_index, n_groups, rank, module, check)
    if floor is None:
        floor = solve_exact(As, Bs, scalings, weights, group_index, n_groups, rank, module, check=False)
    start = time.perf_counter()  # ``seconds`` counts Adam only, not the exact solve for the floor
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = As[0].dtype if As[0].is_floating_point() else torch.float32
    A_pad, B_pad = _padded([A.to(device) for A in As], [B.to(device) for B in Bs], dtype)
    w = weights.to(device=device, dtype=dtype)
    s = torch.as_tensor([float(x) for x in scalings], dtype=dtype, device=device)
    gidx = torch.as_tensor(group_index, device=device)
    group_w = torch.zeros(n_groups, dtype=dtype, device=device).index_add_(0, gidx, w)
    energy = max(floor.energy, 1e-300)
    const = torch.as_tensor(floor.energy, dtype=dtype, device=device)

    # initialisation: weighted mean lora_a, weighted group-mean scaled lora_b
    A0 = (w[:, None, None] * A_pad).sum(0) / w.sum()
    B0 = torch.zeros(n_groups, B_pad.shape[1], B_pad.shape[2], dtype=dtype, device=device)
    B0.index_add_(0, gidx, (w * s)[:, None, None] * B_pad)
    B0 = B0 / group_w[:, None, None]
    rms_a = float(A0.pow(2).mean().sqrt()) or float(A_pad.pow(2).mean().sqrt()) or 1.0
    rms_b = float(B0.pow(2).mean().sqrt()) or float((s[:, None, None] * B_pad).pow(2).mean().sqrt()) or 1.0
    r0 = A0.shape[0]
    if rank > r0:
        gen = torch.Generator().manual_seed(int(seed))
        extra = torch.randn(rank - r0, A0.shape[1], generator=gen, dtype=torch.float64) * rms_a
        A0 = torch.cat([A0, extra.to(device=device, dtype=dtype)], dim=0)
    shared = torch.nn.Parameter(_pad(A0, rank, 0).clone())
    heads = torch.nn.Parameter(_pad(B0, rank, 2).clone())
    optim = torch.optim.Adam([{"params": [shared], "lr": lr * rms_a}, {"params": [heads], "lr": lr * rms_b}])

    losses: list[torch.Tensor] = []
    best = math.inf
    best_params = (shared.detach().clone(), heads.detach().clone())
    previous_best = math.inf
    decays = 0
    step = 0
    for step in range(1, max_steps + 1):
        optim.zero_grad(set_to_none=True)
        loss = _batched_objective(shared, heads, A_pad, B_pad, s, w, gidx, group_w, const)
        (loss / energy).backward()
        losses.append(loss.detach())
        optim.step()
        if step % check_every and step != max_steps:
            continue
        with torch.no_grad():
            current = float(_batched_objective(shared, heads, A_pad, B_pad, s, w, gidx, group_w, const))
        if current < best:
            best = current
            best_params = (shared.detach().clone(), heads.detach().clone())
        if target_loss is not None and best <= target_loss:
            break
        improvement = (previous_best - best) / max(abs(previous_best), 1e-300) if math.isfinite(previous_best) else math.inf
        previous_best = best
        if improvement < tol:
            if decays >= max_decays:
                break
            decays += 1
            for group in optim.param_groups:
                group["lr"] *= lr_decay
    history = torch.stack(losses).double().cpu().tolist() if losses else []
    shared_best, heads_best = (t.cpu() for t in best_params)
    loss_value = objective(shared_best, heads_best, [A.cpu() for A in As], [B.cpu() for B in Bs], scalings, weights, group_index)
    return ModuleSolution(
        shared_best, heads_best, loss_value, floor.floor, floor.spread, floor.truncation, floor.energy,
        eigenvalues=floor.eigenvalues, history=history, steps=step, seconds=time.perf_counter() - start,
    )


def transpose_factors(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Factors of ``dW^T = s A^T B^T``: new A_i = B_i^T ``(r, d_out)``, new B_i = A_i^T ``(d_in, r)`` (for side B)."""
    return [B.T for B in Bs], [A.T for A in As]


@dataclass(frozen=True)
class Solver:
    """A registered HydraOpt solver: ``fn(As, Bs, scalings, weights, group_index, n_groups, rank, module, **options)``.

    Every solver takes ``check=False`` to skip :func:`~.lowrank.check_factors` (shapes and finiteness) when
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


# ============================================================================= weighting


def _uniform(norms_sq: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(norms_sq)


def _inverse_norm(norms_sq: torch.Tensor) -> torch.Tensor:
    return 1.0 / norms_sq


WEIGHTINGS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "uniform": (_uniform, "w_i = 1"),
    "norm": (_inverse_norm, "w_i = 1 / ||dW_i||_F^2 (per module; large updates do not dominate)"),
}


def task_weights(
    weighting: str | Mapping[str, float] | Sequence[float],
    tasks: Sequence[str],
    norms_sq: torch.Tensor,
    module: str = "<module>",
) -> torch.Tensor:
    """Weights w_i ``(N,)`` float64 for one module.

    ``weighting`` is a name in :data:`WEIGHTINGS` (``"uniform"``, ``"norm"``),
    a mapping task -> weight, or a sequence in task order. ``norms_sq`` are the
    ``||dW_i||_F^2`` (factored, :func:`~.lowrank.delta_norms_sq`).
    """
    if isinstance(weighting, str):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose from {sorted(WEIGHTINGS)}, a mapping or a sequence")
        if weighting == "norm" and not (norms_sq > 0).all():
            zero = [t for t, v in zip(tasks, norms_sq.tolist()) if v <= 0]
            raise AdapterError(f"module {module}: weighting='norm' needs non-zero deltas; zero for tasks {zero}")
        w = WEIGHTINGS[weighting][0](norms_sq.double())
    elif isinstance(weighting, Mapping):
        missing = [t for t in tasks if t not in weighting]
        if missing:
            raise ValueError(f"weighting: no weight for tasks {missing}")
        w = torch.as_tensor([float(weighting[t]) for t in tasks], dtype=torch.float64)
    else:
        w = torch.as_tensor([float(x) for x in weighting], dtype=torch.float64)
        if w.shape != (len(tasks),):
            raise ValueError(f"weighting: {w.numel()} weights for {len(tasks)} tasks")
    return w.cpu()


# ============================================================================= grouping tasks into heads


@dataclass(frozen=True)
class Grouping:
    """Heads and the task -> head assignment. ``head_names`` in order of first use by ``tasks``."""

    head_names: list[str]
    task_to_head: dict[str, str]
    how: str

    def index(self, tasks: Sequence[str]) -> list[int]:
        """``group_index[i]`` = position of task i's head in ``head_names``."""
        pos = {h: k for k, h in enumerate(self.head_names)}
        return [pos[self.task_to_head[t]] for t in tasks]

    @property
    def n_heads(self) -> int:
        return len(self.head_names)


def _grouping_from_labels(tasks: Sequence[str], labels: Sequence[Any], how: str) -> Grouping:
    names = [str(x) for x in labels]
    return Grouping(list(dict.fromkeys(names)), dict(zip(tasks, names)), how)


def group_by_task(tasks: Sequence[str]) -> Grouping:
    """One head per task (K = N); heads are named after the tasks."""
    return _grouping_from_labels(tasks, tasks, "task")


def group_by_metadata(tasks: Sequence[str], metadata: Mapping[str, Mapping], key: str) -> Grouping:
    """One head per distinct ``metadata[task][key]`` (e.g. ``"application"``, ``"language"``)."""
    missing = [t for t in tasks if key not in metadata.get(t, {})]
    if missing:
        raise ValueError(f"heads={key!r}: tasks {missing[:5]} have no {key!r} in their metadata")
    return _grouping_from_labels(tasks, [metadata[t][key] for t in tasks], key)


def group_explicit(tasks: Sequence[str], mapping: Mapping[str, Any]) -> Grouping:
    """Heads from an explicit ``{task: head name}`` mapping that covers every task."""
    missing = [t for t in tasks if t not in mapping]
    if missing:
        raise ValueError(f"heads mapping: no head for tasks {missing[:5]}")
    extra = [t for t in mapping if t not in set(tasks)]
    if extra:
        raise ValueError(f"heads mapping: unknown tasks {extra[:5]}")
    return _grouping_from_labels(tasks, [mapping[t] for t in tasks], "explicit")


def task_similarity(adapters, modules: Sequence[str] | None = None) -> torch.Tensor:
    """Cosine similarity of the tasks' whole updates, ``(N, N)`` float64, in factored form.

    ``cos(i, j) = sum_m <dW_i, dW_j>_m / sqrt(sum_m ||dW_i||_m^2 sum_m ||dW_j||_m^2)``
    over ``modules`` (default all), each inner product a trace of ``r x r`` Grams.
    """
    aset = _as_adapter_set(adapters)
    modules = list(modules) if modules is not None else aset.modules
    total = torch.zeros(len(aset.tasks), len(aset.tasks), dtype=torch.float64)
    for module in modules:
        As, Bs, ss = _module_factors(aset, module)
        total += delta_inner_products(As, Bs, ss).cpu()
    norms = total.diagonal().clamp_min(1e-300).sqrt()
    return total / norms[:, None] / norms[None, :]


def group_by_clustering(
    tasks: Sequence[str],
    similarity: torch.Tensor | np.ndarray,
    n_heads: int,
    method: str = "average",
) -> Grouping:
    """``n_heads`` heads by hierarchical clustering of the tasks (``scipy.cluster.hierarchy``).

    Distance ``1 - similarity`` (e.g. :func:`task_similarity`), ``method``
    linkage (default average), cut into exactly ``n_heads`` clusters with
    ``cut_tree``. Heads are named ``cluster0``, ``cluster1``... in order of
    their first task.
    """
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform

    n = len(tasks)
    if not 1 <= int(n_heads) <= n:
        raise ValueError(f"heads={n_heads}: need 1 <= K <= number of tasks ({n})")
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.shape != (n, n):
        raise ValueError(f"similarity {sim.shape} does not match {n} tasks")
    if n == 1:
        return _grouping_from_labels(tasks, ["cluster0"], f"clustering:{method}")
    dist = np.clip(1.0 - (sim + sim.T) / 2, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    Z = linkage(squareform(dist, checks=False), method=method)
    raw = cut_tree(Z, n_clusters=int(n_heads)).ravel()
    order = {c: k for k, c in enumerate(dict.fromkeys(raw.tolist()))}
    return _grouping_from_labels(tasks, [f"cluster{order[c]}" for c in raw.tolist()], f"clustering:{method}")


def resolve_groups(heads, adapters, modules: Sequence[str] | None = None, cluster_method: str = "average") -> Grouping:
    """Turn the ``heads`` argument of :func:`hydraopt` into a :class:`Grouping`.

    ``"task"`` (K = N); any other string: a metadata key (``"application"``,
    ``"language"``); an int K: hierarchical clustering on :func:`task_similarity`;
    a mapping task -> head; a :class:`Grouping` as is.
    """
    aset = _as_adapter_set(adapters)
    tasks = aset.tasks
    if isinstance(heads, Grouping):
        group_explicit(tasks, heads.task_to_head)
        return heads
    if isinstance(heads, str):
        if heads == "task":
            return group_by_task(tasks)
        return group_by_metadata(tasks, aset.metadata, heads)
    if isinstance(heads, Mapping):
        return group_explicit(tasks, heads)
    if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        if int(heads) == len(tasks):
            return _grouping_from_labels(tasks, [f"cluster{i}" for i in range(len(tasks))], f"clustering:{cluster_method}")
        if int(heads) == 1:
            return _grouping_from_labels(tasks, ["cluster0"] * len(tasks), f"clustering:{cluster_method}")
        return group_by_clustering(tasks, task_similarity(aset, modules), int(heads), cluster_method)
    raise TypeError(f"heads must be 'task', a metadata key, an int K or a task -> head mapping, got {heads!r}")


# ============================================================================= adapter sets


def _as_adapter_set(adapters, metadata=None, base_model=None):
    """An :class:`~hydralib.adapters.AdapterSet` from a set or from ``{task: {module: (A, B, s)}}``."""
    from ..adapters import AdapterSet

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


# ============================================================================= results and the entry point


@dataclass
class ModuleResult:
    """HydraOpt at one module, in the orientation of ``side``.

    Side ``"A"``: ``shared`` is lora_a A' ``(r', d_in)`` and ``heads`` the lora_b
    B'_k stacked ``(K, d_out, r')``. Side ``"B"``: ``shared`` is lora_b B'
    ``(d_out, r')`` and ``heads`` the lora_a A'_k stacked ``(K, r', d_in)``.
    Either way head k's update is ``lora_b @ lora_a`` (scaling 1). ``loss``,
    ``floor = spread + truncation`` and ``energy = sum_i w_i ||dW_i||^2`` are
    weighted sums of squares; ``weights`` ``(N,)`` are the w_i used.
    """

    module: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    spread: float
    truncation: float
    energy: float
    weights: torch.Tensor
    history: list[float] | None = None
    steps: int | None = None
    seconds: float = 0.0

    @property
    def storage(self) -> int:
        """Numbers stored: the shared factor once plus the K heads."""
        return int(self.shared.numel() + self.heads.numel())


@dataclass
class HydraOptResult:
    """A HydraOpt result over all modules of an adapter set.

    ``modules`` maps module name -> :class:`ModuleResult`; ``task_to_head``
    maps every task to one of ``head_names``. ``factors(task, module)`` gives
    the LoRA ``(lora_a (r', d_in), lora_b (d_out, r'), 1.0)`` that task runs.
    """

    side: str
    rank: int
    solver: str
    weighting: str
    tasks: list[str]
    head_names: list[str]
    task_to_head: dict[str, str]
    modules: dict[str, ModuleResult]
    base_model: str | None = None
    grouping: str = ""
    metadata: dict[str, dict] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- summaries
    @property
    def n_heads(self) -> int:
        return len(self.head_names)

    @property
    def total_loss(self) -> float:
        return float(sum(m.loss for m in self.modules.values()))

    @property
    def total_floor(self) -> float:
        return float(sum(m.floor for m in self.modules.values()))

    @property
    def total_spread(self) -> float:
        return float(sum(m.spread for m in self.modules.values()))

    @property
    def total_truncation(self) -> float:
        return float(sum(m.truncation for m in self.modules.values()))

    @property
    def total_energy(self) -> float:
        return float(sum(m.energy for m in self.modules.values()))

    @property
    def storage(self) -> int:
        """Numbers stored, counted from the tensors (shared factors once, every head)."""
        return int(sum(m.storage for m in self.modules.values()))

    @property
    def storage_per_module(self) -> dict[str, int]:
        return {name: m.storage for name, m in self.modules.items()}

    @property
    def loss_history(self) -> dict[str, list[float]]:
        """Adam's per-step losses by module (empty for the exact solver)."""
        return {name: m.history for name, m in self.modules.items() if m.history is not None}

    def relative_storage(self, adapters) -> float:
        """Storage divided by that of keeping every adapter of ``adapters`` (r (d_in + d_out) per task and module)."""
        aset = _as_adapter_set(adapters)
        total = sum(aset.rank(t, m) * sum(aset.shape(m)) for t in aset.tasks for m in aset.modules)
        return self.storage / total

    def summary(self) -> dict:
        """JSON-ready numbers: loss, floor, spread, truncation, energy, storage, heads."""
        return {
            "side": self.side, "rank": self.rank, "solver": self.solver, "weighting": self.weighting,
            "heads": self.n_heads, "grouping": self.grouping, "loss": self.total_loss, "floor": self.total_floor,
            "spread": self.total_spread, "truncation": self.total_truncation, "energy": self.total_energy,
            "storage": self.storage,
        }

    # ---------------------------------------------------------------- per-task views
    def head_index(self, task: str) -> int:
        if task not in self.task_to_head:
            raise KeyError(f"unknown task {task!r}")
        return self.head_names.index(self.task_to_head[task])

    def factors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(lora_a (r', d_in), lora_b (d_out, r'), 1.0)`` for ``task`` at ``module`` (views, no copy)."""
        m = self.modules[module]
        k = self.head_index(task)
        if self.side == "A":
            return m.shared, m.heads[k], 1.0
        return m.heads[k], m.shared, 1.0

    def delta(self, task: str, module: str) -> torch.Tensor:
        """Dense reconstructed ``dW`` ``(d_out, d_in)`` of ``task`` (forms the full matrix)."""
        A, B, s = self.factors(task, module)
        return s * (B @ A)

    def to_adapter_set(self, tasks: Sequence[str] | None = None):
        """An :class:`~hydralib.adapters.AdapterSet` of the reconstructed per-task LoRAs (rank r', scaling 1)."""
        from ..adapters import AdapterSet

        tasks = list(tasks) if tasks is not None else self.tasks
        factors = {t: {m: tuple(x.contiguous() if torch.is_tensor(x) else x for x in self.factors(t, m))
                       for m in self.modules} for t in tasks}
        return AdapterSet.from_factors(factors, base_model=self.base_model,
                                       metadata={t: self.metadata.get(t, {}) for t in tasks})

    def save(self, path, overwrite: bool = False):
        """Save as one bundle (see :func:`hydralib.merge.bundle.save_bundle`)."""
        from .bundle import save_bundle

        return save_bundle(self, path, overwrite=overwrite)


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

    results: dict[str, ModuleResult] = {}
    for module in tqdm(modules, desc=f"hydraopt {solver} side {side}", disable=not progress, leave=False):
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
        results[module] = ModuleResult(
            module, shared.cpu(), head_tensors.cpu(), sol.loss, sol.floor, sol.spread, sol.truncation, sol.energy,
            w, history=sol.history, steps=sol.steps, seconds=sol.seconds,
        )
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
        grouping=grouping.how,
        metadata={t: dict(aset.metadata.get(t, {})) for t in aset.tasks},
        options={"seed": seed, "cluster_method": cluster_method, **({"target_ratio": target_ratio} if target_ratio else {}),
                 **{k: v for k, v in solver_options.items() if isinstance(v, (int, float, str, bool))}},
    )
