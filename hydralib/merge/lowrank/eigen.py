"""Top eigenpairs without the full spectrum: of a symmetric PSD matrix, and of ``A^T D A`` on the factors.

:func:`top_eigen` takes the top k eigenpairs of an ``(R, R)`` matrix by
subspace iteration (large R, small k), a partial LAPACK solver or a full
``eigh``; :func:`factored_top_eigen` those of ``M = A^T D A`` by block Krylov
steps that touch ``A`` (e.g. the stacked lora_A ``(sum r_i, d_in)``) only
through skinny products, never forming M, D or a Gram of A.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["top_eigenpairs", "TopEigen", "top_eigen", "SUBSPACE_MIN_SIZE", "FactoredEigen", "factored_top_eigen"]


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry is positive (reproducible eigenvectors)."""
    pivot = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[pivot, torch.arange(vectors.shape[1], device=vectors.device)])
    signs[signs == 0] = 1
    return vectors * signs


def top_eigenpairs(H: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues of a symmetric PSD ``(R, R)`` matrix in descending order (clipped at 0) and the top ``k`` eigenvectors ``(R, min(k, R))``.

    Each eigenvector's sign is fixed (largest-magnitude entry positive) so results are reproducible.
    A full ``torch.linalg.eigh``; :func:`top_eigen` computes only the top ``k`` when that is cheaper.
    When LAPACK's float32 solver does not converge (a Gram with many repeated eigenvalues, e.g. adapters that
    share lora_A exactly, as LoRA-FA's do), the decomposition is redone in float64.
    """
    try:
        values, vectors = torch.linalg.eigh(H)
    except torch.linalg.LinAlgError:
        values, vectors = (t.to(H.dtype) for t in torch.linalg.eigh(H.double()))
    values = values.flip(0).clamp_min(0)
    vectors = vectors.flip(1)[:, : min(k, H.shape[0])]
    return values, _fix_signs(vectors)


@dataclass
class TopEigen:
    """The top ``k' = min(k, R)`` eigenpairs of a symmetric PSD ``(R, R)`` matrix H and the sum of the rest.

    ``values`` ``(k',)``: the top eigenvalues, descending, clipped at 0, in H's
    dtype. ``vectors`` ``(R, k')``: orthonormal eigenvectors in H's dtype, each
    with its largest-magnitude entry positive. ``tail``: the sum of the
    eigenvalues beyond the first ``k`` (float64; 0 when ``k >= R``), computed
    as ``trace(H) - sum(top k)`` when the full spectrum is not computed.
    ``method``: ``"subspace"`` (subspace iteration converged), ``"eigh-partial"``
    (LAPACK ``dsyevr`` on the top ``k'`` only, float64) or ``"eigh"`` (full
    ``torch.linalg.eigh``). ``iterations``: subspace-iteration steps run (also
    when it fell back); ``residual``: its last ``max_j ||H v_j - theta_j v_j|| /
    theta_1`` (NaN when it did not run).
    """

    values: torch.Tensor
    vectors: torch.Tensor
    tail: float
    method: str
    iterations: int = 0
    residual: float = math.nan


#: Smallest R for which ``top_eigen(method="auto")`` tries subspace iteration (below it a full eigh is cheap).
SUBSPACE_MIN_SIZE = 256


def _subspace_iteration(
    H: torch.Tensor, k: int, oversample: int | None, max_iter: int, tol: float | None, seed: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, int, float]:
    """Block subspace iteration with Rayleigh-Ritz for the top ``k`` eigenpairs of H, in float64.

    Returns ``(theta (p,), V (R, k), iterations, residual)``; ``theta`` and
    ``V`` are ``None`` when it did not converge (or is predicted not to within
    ``max_iter`` steps, from the observed decrease of the residual).
    """
    R = H.shape[0]
    p = min(R, k + (max(8, k // 4) if oversample is None else int(oversample)))
    if tol is None:  # the accuracy of H's own dtype, but no finer than float64 arithmetic can certify
        tol = max(2 * torch.finfo(H.dtype).eps, 16 * torch.finfo(torch.float64).eps * math.sqrt(R))
    H64 = H.detach().to(torch.float64)
    gen = torch.Generator().manual_seed(int(seed))  # fixed start on the CPU: the same on every device
    start = torch.randn(R, p, generator=gen, dtype=torch.float64).to(H64.device)
    basis = torch.linalg.qr(H64 @ start).Q
    previous, residual = math.inf, math.inf
    for it in range(1, int(max_iter) + 1):
        Y = H64 @ basis
        T = basis.T @ Y
        theta, W = torch.linalg.eigh((T + T.T) / 2)  # Rayleigh-Ritz on span(basis)
        theta, W = theta.flip(0), W.flip(1)
        V = basis @ W[:, :k]
        res = float((Y @ W[:, :k] - V * theta[:k]).norm(dim=0).max())  # ||H v_j - theta_j v_j||
        scale = float(theta.abs().max())  # theta_1 for a PSD H
        residual = res / scale if scale > 0 else (0.0 if res == 0 else math.inf)
        if residual <= tol:
            return theta, V, it, residual
        if it >= 2:
            rate = residual / previous
            needed = math.log(tol / residual) / math.log(rate) if tol > 0 and 0 < rate < 1 else math.inf
            if it + needed > max_iter:
                break  # stagnates or converges too slowly (flat spectrum around k): not worth going on
        previous = residual
        basis = torch.linalg.qr(Y).Q  # one power step
    return None, None, it, residual


def top_eigen(
    H: torch.Tensor,
    k: int,
    *,
    method: str = "auto",
    oversample: int | None = None,
    max_iter: int = 12,
    tol: float | None = None,
    seed: int = 0,
) -> TopEigen:
    """Top ``k`` eigenpairs of a symmetric PSD ``(R, R)`` matrix H without its full spectrum: a :class:`TopEigen`.

    ``method="auto"``: when ``R >= SUBSPACE_MIN_SIZE`` and ``k <= R / 4``,
    subspace iteration in float64 (block of ``p = k + oversample`` columns,
    default oversample ``max(8, k // 4)``; a fixed random start from
    ``torch.Generator().manual_seed(seed)``; one product ``H @ X`` ``(R, p)``
    per step and a Rayleigh-Ritz step on its span) until every top-``k``
    residual ``||H v_j - theta_j v_j||`` is at most ``tol * theta_1`` (default:
    2 eps of H's dtype, at least ``16 eps_64 sqrt(R)``). It stops early when the
    residual decreases too slowly to get there within ``max_iter`` steps (a
    flat spectrum around ``k``) and falls back to an eigensolver: LAPACK
    ``dsyevr`` on the top ``k`` only, in float64
    (``scipy.linalg.eigh(subset_by_index=...)``, H on the CPU), or a full
    ``torch.linalg.eigh`` in H's dtype (other devices). Otherwise (small R or
    large k) a full ``torch.linalg.eigh``, exactly :func:`top_eigenpairs`.
    ``method="subspace"`` tries subspace iteration (with the same fallback)
    whenever ``k < R``; ``method="eigh"`` always takes the full eigh.

    The tail (sum of the eigenvalues beyond ``k``) is ``trace(H) - sum`` of the
    top ``k`` in float64 on the partial paths. Deterministic: the same H gives
    bit-identical results. When the k-th and (k+1)-th eigenvalues coincide the
    top-k subspace is not unique and any of them may be returned (its values
    and tail are).
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"top_eigen: H must be square (R, R), got shape {tuple(H.shape)}")
    if int(k) < 1:
        raise ValueError(f"top_eigen: k must be >= 1, got {k}")
    if method not in ("auto", "subspace", "eigh"):
        raise ValueError(f"top_eigen: method must be 'auto', 'subspace' or 'eigh', got {method!r}")
    R = int(H.shape[0])
    k = int(k)
    kk = min(k, R)
    if method == "subspace":
        try_subspace = kk < R
    else:
        try_subspace = method == "auto" and R >= SUBSPACE_MIN_SIZE and 4 * kk <= R
    iterations, residual = 0, math.nan
    if try_subspace:
        theta, V, iterations, residual = _subspace_iteration(H, kk, oversample, max_iter, tol, seed)
        if theta is not None:
            tail = max(float(H.detach().double().trace()) - float(theta[:kk].sum()), 0.0)
            values = theta[:kk].clamp_min(0).to(H.dtype)
            return TopEigen(values, _fix_signs(V.to(H.dtype)), tail, "subspace", iterations, residual)
        if H.device.type == "cpu" and kk < R:
            import scipy.linalg

            H64 = H.detach().double()
            w, v = scipy.linalg.eigh(H64.numpy(), subset_by_index=[R - kk, R - 1], driver="evr")
            top = torch.from_numpy(w[::-1].copy())
            tail = max(float(H64.trace()) - float(top.sum()), 0.0)
            vectors = torch.from_numpy(v[:, ::-1].copy()).to(H.dtype)
            return TopEigen(top.clamp_min(0).to(H.dtype), _fix_signs(vectors), tail, "eigh-partial", iterations, residual)
    values, vectors = top_eigenpairs(H, kk)
    return TopEigen(values[:kk], vectors, float(values[kk:].double().sum()), "eigh", iterations, residual)


# ----------------------------------------------------------------------------- top eigenpairs of A^T D A on the factors


@dataclass
class FactoredEigen:
    """Top ``k'`` eigenpairs of ``M = A^T D A`` ``(d, d)`` found on the factors by :func:`factored_top_eigen`.

    ``vectors`` ``(d, k')``: orthonormal Ritz vectors in A's dtype (``d`` is the
    width of A). ``values`` ``(k',)``: their Ritz values ``v^T M v`` (float64,
    descending; computed in A's dtype, so only as accurate as it).
    ``converged``: see :func:`factored_top_eigen`; when False the vectors are
    the last iterate and callers fall back to an eigensolver. ``iterations``
    run (blocks of the Krylov basis), the last ``residual``
    ``max_j ||M v_j - theta_j v_j|| / theta_1`` and ``excess``, the estimate
    ``sum_j ||M v_j - theta_j v_j||^2 / (theta_j - theta_{k'+1})`` of how much
    ``sum_j theta_j`` falls short of the sum of the top eigenvalues.
    """

    vectors: torch.Tensor
    values: torch.Tensor
    converged: bool
    iterations: int
    residual: float
    excess: float = math.nan


def factored_top_eigen(
    A: torch.Tensor,
    apply_d: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    *,
    oversample: int | None = None,
    max_iter: int = 12,
    tol: float | None = None,
    excess_tol: float | None = None,
    trace: float | None = None,
    seed: int = 0,
) -> FactoredEigen:
    """Top ``k`` eigenpairs of ``M = A^T D A`` without forming M, D or any Gram of A: block Krylov iteration.

    ``A`` ``(n, d)`` (e.g. the stacked lora_A of N tasks, ``n = sum r_i``) and
    ``apply_d(Y)`` ``(n, p) -> (n, p)`` applying a symmetric PSD ``D`` ``(n, n)``
    (e.g. block-diagonal ``w_i s_i^2 B_i^T B_i``). Eigenvectors of M with a
    nonzero eigenvalue lie in the row space of A.

    Blocks of ``p = k + oversample`` columns (default oversample
    ``max(8, k // 4)``). The first is ``orth(A^T D Omega)``, ``Omega`` ``(n, p)``
    Gaussian from ``torch.Generator().manual_seed(seed)`` (on the CPU, so every
    device starts alike); each step multiplies the newest block by M (two
    skinny products with A, ``O(n d p)``, plus ``apply_d``), orthogonalises it
    against the basis so far (twice) and appends it. A Rayleigh-Ritz step on
    the whole basis (``X^T M X = (AX)^T D (AX)`` costs no product with A) gives
    Ritz values ``theta`` and, from the stored ``M X``, the residuals
    ``r_j = M v_j - theta_j v_j`` of the top ``k``.

    Convergence is judged on what HydraOpt's objective depends on, the sum of
    the top ``k`` Ritz values: its shortfall from the sum of the top ``k``
    eigenvalues is estimated as ``excess = sum_j ||r_j||^2 / (theta_j -
    theta_{k+1})``. With ``trace`` (= ``trace(M)``) given, converged when
    ``max_j ||r_j|| <= 1e-3 theta_1`` and ``excess <= excess_tol * (trace -
    sum_j theta_j)``, i.e. relative to the tail (the truncation term, which
    the loss contains). Without it, also when ``excess <= excess_tol * sum_j
    theta_j`` or ``max_j ||r_j|| <= tol * theta_1`` (default ``tol``: ``64 eps``
    of A's dtype, at least ``16 eps_64 sqrt(d)``; the float32 residual stalls
    near 1e-6 at d = 2048). Default ``excess_tol``: 1e-8 for float32 (the
    objective within ~1e-8 of its minimum, relative to the tail; the
    vectors then agree with the exact ones to ~1e-4), 1e-14 for float64.
    Works in A's dtype (float32 products are several times faster than
    float64 ones; the start
    ``Omega`` is drawn once per ``(n, p, seed)`` and kept). It gives up (``converged`` False)
    when the basis would outgrow ``min(n, d)``, after ``max_iter`` blocks, or
    when from the third block on the observed rate predicts no convergence
    within ``max_iter`` (a flat spectrum around k).
    """
    if A.ndim != 2:
        raise ValueError(f"factored_top_eigen: A must be (n, d), got shape {tuple(A.shape)}")
    if int(k) < 1:
        raise ValueError(f"factored_top_eigen: k must be >= 1, got {k}")
    n, d = (int(x) for x in A.shape)
    kk = min(int(k), n, d)
    p = min(n, d, kk + (max(8, kk // 4) if oversample is None else int(oversample)))
    if tol is None:
        tol = max(64 * torch.finfo(A.dtype).eps, 16 * torch.finfo(torch.float64).eps * math.sqrt(d))
    if excess_tol is None:
        excess_tol = 1e-14 if A.dtype == torch.float64 else 1e-8
    dtype, device = A.dtype, A.device
    m_max = max(p, min(int(max_iter) * p, n, d))  # columns the basis may reach
    Xb = torch.empty((m_max, d), dtype=dtype, device=device)  # basis X^T, rows orthonormal
    Zb = torch.empty((m_max, d), dtype=dtype, device=device)  # (M X)^T
    Yb = torch.empty((m_max, n), dtype=dtype, device=device)  # (A X)^T
    DYb = torch.empty((n, m_max), dtype=dtype, device=device)  # D A X
    T = torch.zeros(m_max, m_max, dtype=torch.float64, device=device)  # X^T M X
    omega = _gaussian_start(n, p, int(seed)).to(device=device, dtype=dtype, copy=True)
    Xt = torch.linalg.qr((apply_d(omega).T @ A).T).Q.T  # a random block in the row space of M
    previous, residual, excess, it, m = math.inf, math.inf, math.nan, 0, 0
    Vt = Xt[:kk]
    theta = torch.zeros(kk, dtype=torch.float64)
    for it in range(1, int(max_iter) + 1):
        b = int(Xt.shape[0])
        Xb[m:m + b] = Xt
        Yb[m:m + b] = Xt @ A.T  # (A X_j)^T
        DYb[:, m:m + b] = apply_d(Yb[m:m + b].T.contiguous())
        Zb[m:m + b] = DYb[:, m:m + b].T @ A  # (M X_j)^T
        block = (Yb[:m + b] @ DYb[:, m:m + b]).double()  # X^T M X_j
        T[:m + b, m:m + b] = block
        T[m:m + b, :m + b] = block.T
        m += b
        theta, W = torch.linalg.eigh((T[:m, :m] + T[:m, :m].T) / 2)  # Rayleigh-Ritz on the whole basis
        theta, W = theta.flip(0), W.flip(1)
        Wk = W[:, :kk].to(dtype)
        Vt = Wk.T @ Xb[:m]  # Ritz vectors as rows, (k', d)
        norms = (Wk.T @ Zb[:m] - theta[:kk].to(dtype)[:, None] * Vt).norm(dim=1).double().cpu()
        scale = float(theta.abs().max())
        res = float(norms.max())
        residual = res / scale if scale > 0 else (0.0 if res == 0 else math.inf)
        top = theta[:kk].cpu()
        if m > kk:
            gaps = top - float(theta[kk])
            excess = float((norms**2 / gaps).sum()) if bool((gaps > 0).all()) else math.inf
        else:
            excess = 0.0 if residual == 0 else math.inf
        total = float(top.clamp_min(0).sum())
        allowed = excess_tol * (max(float(trace) - total, 0.0) if trace is not None else total)
        converged = residual <= 1e-3 and excess <= allowed
        if trace is None:
            converged = converged or residual <= tol
        if converged:
            return FactoredEigen(Vt.T, top, True, it, residual, excess)
        if m + p > m_max:
            break  # no room for another block
        if it >= 3:
            # the residual that would do (the excess goes as its square), and the steps to get there at the last rate
            target = residual * math.sqrt(allowed / excess) if 0 < allowed < excess < math.inf else 0.0
            if trace is None:
                target = max(target, tol)
            target = min(target, 1e-3)
            rate = residual / previous
            needed = math.log(target / residual) / math.log(rate) if target > 0 and 0 < rate < 1 else math.inf
            if it + needed > max_iter:
                break  # converges too slowly (a flat spectrum around k): not worth going on
        previous = residual
        Xt = _next_block(Zb[m - b:m], Xb[:m])
        if Xt is None:
            break  # the basis is (numerically) invariant under M: nothing new to add
    return FactoredEigen(Vt.T, theta[:kk].cpu(), False, it, residual, excess)


@functools.lru_cache(maxsize=8)
def _gaussian_start(n: int, p: int, seed: int) -> torch.Tensor:
    """The Gaussian ``(n, p)`` float64 start of :func:`factored_top_eigen` (CPU, from ``manual_seed(seed)``); cached, do not modify."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, p, generator=gen, dtype=torch.float64)


def _next_block(Zt: torch.Tensor, Xt: torch.Tensor) -> torch.Tensor | None:
    """The part of the rows of ``Zt`` ``(b, d)`` orthogonal to the orthonormal rows of ``Xt`` ``(m, d)``, as orthonormal rows.

    Classical Gram-Schmidt twice, then a QR; directions whose new part is below
    ``sqrt(eps)`` of the largest row of ``Zt`` are dropped (deflation: a
    Householder QR of a rank-deficient block would fill them with arbitrary
    directions that are not orthogonal to ``Xt``), and the kept ones are
    orthogonalised once more. ``None`` when nothing is left.
    """
    scale = float(Zt.norm(dim=1).max())
    Z = Zt
    for _ in range(2):
        Z = Z - (Z @ Xt.T) @ Xt
    Q, R = torch.linalg.qr(Z.T)
    keep = R.diagonal().abs() > math.sqrt(torch.finfo(Z.dtype).eps) * scale
    if scale == 0 or not bool(keep.any()):
        return None
    Q = Q.T if bool(keep.all()) else Q[:, keep].T
    Q = Q - (Q @ Xt.T) @ Xt
    return torch.linalg.qr(Q.T).Q.T
