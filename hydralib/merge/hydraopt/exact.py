"""The exact HydraOpt solver at one module (side-A orientation): the top r' eigenvectors of ``S^T S``, on the factors.

:func:`solve_exact` takes the *factored* path (block Krylov steps on the
stacked lora_A, :func:`~hydralib.merge.lowrank.factored_top_eigen`) for large
problems and the *Householder* path (QR of the stacked A_i and an eigensolver
on ``(SQ)^T (SQ)``, :func:`~hydralib.merge.lowrank.stacked_gram`) otherwise;
see its docstring for both.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from ..lowrank import SUBSPACE_MIN_SIZE, block_sums, factored_top_eigen, stacked_gram, top_eigen
from ..lowrank.eigen import _fix_signs
from ..products import gram64, matmul64, to_float64
from .problem import ModuleSolution, _check_problem, _pad, _padded, objective

__all__ = ["solve_exact"]


def _floor_problem(As, Bs, scalings, weights, group_index, n_groups, rank):
    """Shared work of both solvers: the Gram form of S, its top-r' eigenpairs, and the truncation.

    Returns ``(gram, values (min(r', R),), V (R, min(r', R)), truncation)``;
    :func:`~hydralib.merge.lowrank.top_eigen` computes only the top r' eigenpairs (subspace
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
    not converge (:func:`~hydralib.merge.lowrank.factored_top_eigen`).
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
                G = to_float64((Bt @ Bt.T).to(device))
                del Bt
                A_k = A_cat[rows]
                s_k, w_k = s[a:b], w[a:b]
                GA_k = to_float64((A_k @ A_k.T).to(device))
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
                out[rows] = D_k @ Y[rows]
            return out

    eig = factored_top_eigen(A_cat, apply_d, rank, trace=energy - spread)
    if not eig.converged:
        return None
    shared = _fix_signs(eig.vectors).T.contiguous()  # A' (r', d_in), orthonormal rows
    Y64 = matmul64(A_cat, shared.mT).to(device).view(n, r, rank)  # A_i A'^T, float64

    # heads B'_k = M_k A'^T = sum_{i in k} c_i B_i (A_i A'^T); T = A' M A'^T = sum_k W_k B'_k^T B'_k in float64
    if singletons:
        heads = B_pad @ (s[:, None, None] * Y64).to(dtype)  # (n, d_out, r'): s_i B_i (A_i A'^T)
        T = ((w * s**2)[:, None, None] * (Y64.mT @ GB @ Y64)).sum(dim=0)
    else:
        heads = torch.empty((n_groups, d_out, rank), dtype=dtype, device=device)
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
    eigenvectors come from :func:`~hydralib.merge.lowrank.factored_top_eigen`: block Krylov
    steps that each cost two skinny products with ``A_cat`` (no QR of the
    ``(d_in, sum r_i)`` stack, no ``R x R`` matrix), in the factors' dtype,
    until the objective is within ~1e-8 (float32; 1e-14 for float64) of its
    minimum relative to the truncation term. Then ``A'`` = those vectors
    (orthonormal rows), ``B'_k = M_k A'^T = sum_{i in k} c_i B_i (A_i A'^T)``.
    Everything reported is float64: the per-task energies from ``r x r``
    Grams, ``T = A' S^T S A'^T = sum_k W_k B'_k^T B'_k`` from ``Y = A_cat A'^T``
    (float64 products, :func:`~hydralib.merge.products.gram64` and :func:`~hydralib.merge.products.matmul64`), the loss
    ``energy - 2 tr(T) + tr(T A' A'^T)`` (the objective at A' and those heads;
    the stored heads are them rounded to the factors' dtype, which moves the
    loss only at second order), the eigenvalues as the Ritz values of
    ``(T, A' A'^T)`` and ``truncation = energy - spread - sum`` of them. The
    spread uses within-head Grams in the factors' dtype, as below. When the
    iteration does not converge (a flat spectrum around r'), or for small
    problems, the *Householder* path (``method="householder"``):

    1-2. :func:`~hydralib.merge.lowrank.stacked_gram`: ``Q`` ``(d_in, R)`` (kept as Householder
       reflectors, never formed), ``C_i = A_i Q``;
       per group k ``P_k = stack(c_i C_i)`` with ``c_i = w_i s_i / W_k`` and
       ``(M_k Q)^T (M_k Q) = P_k^T (B_k^T B_k) P_k``; ``H = sum_k W_k (.)``
       ``(R, R)`` = ``(SQ)^T (SQ)``; the spread from the within-group inner
       products ``sum_i w_i ||dW_i||^2 - W_k ||M_k||^2``;
    3. V ``(R, min(r', R))`` = top r' eigenvectors of H (:func:`~hydralib.merge.lowrank.top_eigen`:
       subspace iteration when R >= 256 and r' <= R / 4, falling back to an
       eigensolver); ``A' = V^T Q^T`` ``(r', d_in)`` (orthonormal rows; ``Q V``
       by applying the reflectors), ``B'_k = B_k (P_k V)`` ``(d_out, r')``;
    4. truncation = sum of the eigenvalues of H beyond r' (``trace(H)`` minus
       the top r'); the loss is re-evaluated from (A', B'_k) by :func:`objective`.

    When ``r' > R`` the extra rows of A' and columns of B'_k are zero. The
    sign of each row of A' (and of the matching head column) is fixed so that
    its largest-magnitude entry is positive on the factored path, and in
    coordinates of Q on the Householder path.

    ``check=False`` skips :func:`~hydralib.merge.lowrank.check_factors` (a pass over every
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
