"""Factored linear algebra on LoRA factors: never form a ``d_out x d_in`` matrix.

Conventions (the whole of ``hydralib.merge``): task i at one module has
``lora_a`` A_i ``(r_i, d_in)``, ``lora_b`` B_i ``(d_out, r_i)`` and a scaling
s_i; its update is the delta ``dW_i = s_i * B_i @ A_i`` ``(d_out, d_in)``.

Every row of a sum of deltas lies in the row space of the stacked A_i. With
``Q`` ``(d_in, R)`` an orthonormal basis of that space (``R <= sum r_i``) and
``C_i = A_i Q`` ``(r_i, R)``, a weighted sum ``M = sum_i c_i B_i A_i`` equals
``(M Q) Q^T`` and ``(MQ)^T (MQ) = sum_{i,j} c_i c_j C_i^T (B_i^T B_j) C_j`` is an
``R x R`` matrix assembled from ``r x r`` Gram blocks. Its eigenvectors V give
the truncated SVD of M as LoRA factors: ``A_m = V^T Q^T``, ``B_m = (MQ) V``.
Inner products of deltas are traces of ``r x r`` Grams:
``<dW_i, dW_j>_F = s_i s_j sum((B_i^T B_j) * (A_i A_j^T))``.

The ``dense_*`` functions form the full matrices; they are references for the
tests and for small examples, never used by the solvers.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> As = [torch.randn(4, 64, generator=g, dtype=torch.float64) for _ in range(3)]
>>> Bs = [torch.randn(32, 4, generator=g, dtype=torch.float64) for _ in range(3)]
>>> svd = lowrank_svd(As, Bs, coeffs=[1.0, 0.5, -2.0], rank=12)      # on the factors
>>> M = dense_weighted_sum(As, Bs, [1.0, 0.5, -2.0])                 # (32, 64), dense
>>> torch.allclose(svd.lora_b @ svd.lora_a, M)                        # rank 12 = sum of ranks
True
>>> ip = delta_inner_products(As, Bs, [1.0, 1.0, 1.0])               # (3, 3), factored
>>> torch.allclose(ip[0, 1], (Bs[0] @ As[0] * (Bs[1] @ As[1])).sum())
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import AdapterError
from .products import empty_buffer, matmul, matmul_nt

__all__ = [
    "check_factors",
    "stack_lora_a",
    "stack_lora_b",
    "rank_index",
    "RowSpace",
    "row_space",
    "row_space_basis",
    "block_sums",
    "delta_inner_products",
    "delta_norms_sq",
    "weighted_gram",
    "StackedGram",
    "stacked_gram",
    "top_eigenpairs",
    "TopEigen",
    "top_eigen",
    "SUBSPACE_MIN_SIZE",
    "FactoredEigen",
    "factored_top_eigen",
    "LowRankSVD",
    "lowrank_svd",
    "lora_inner",
    "dense_delta",
    "dense_weighted_sum",
    "truncated_svd_dense",
    "dense_stacked_floor",
]


# ----------------------------------------------------------------------------- validation and stacking


def check_factors(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float] | None = None,
    module: str = "<module>",
    tasks: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Check that factors of N tasks at one module fit together; return ``(d_out, d_in)``.

    On the factors: each A_i must be ``(r_i, d_in)`` and each B_i ``(d_out, r_i)``
    with the same ``d_in`` / ``d_out`` for all tasks, and finite. Raises
    :class:`~hydralib.errors.AdapterError` (a ValueError) naming ``module``
    and the task.
    """
    if len(As) == 0 or len(As) != len(Bs):
        raise AdapterError(f"module {module}: need the same positive number of lora_a and lora_b, got {len(As)} and {len(Bs)}")
    if scalings is not None and len(scalings) != len(As):
        raise AdapterError(f"module {module}: {len(scalings)} scalings for {len(As)} tasks")
    names = list(tasks) if tasks is not None else [f"#{i}" for i in range(len(As))]
    d_out, d_in = None, None
    for name, A, B in zip(names, As, Bs):
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
            raise AdapterError(
                f"module {module}: task {name}: lora_a {tuple(A.shape)} and lora_b {tuple(B.shape)} "
                "are not (r, d_in) and (d_out, r)"
            )
        for side, t in (("lora_a", A), ("lora_b", B)):
            if not _all_finite(t):
                raise AdapterError(f"module {module}: task {name}: {side} has NaN/Inf values")
        if d_out is None:
            d_out, d_in = int(B.shape[0]), int(A.shape[1])
        elif (B.shape[0], A.shape[1]) != (d_out, d_in):
            raise AdapterError(
                f"module {module}: task {name}: delta shape {B.shape[0]}x{A.shape[1]} disagrees with "
                f"{d_out}x{d_in} of task {names[0]}"
            )
    return d_out, d_in


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite; one reduction instead of an elementwise test in the usual case.

    A NaN or an infinity anywhere makes the sum non-finite, so a finite sum proves
    that all entries are finite; a non-finite sum (a bad entry, or an overflow of
    the sum itself) is settled by the elementwise ``torch.isfinite``.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def stack_lora_a(As: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack lora_a factors row-wise: ``(sum r_i, d_in)`` (on the factors)."""
    return torch.cat(list(As), dim=0)


def stack_lora_b(Bs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack lora_b factors column-wise: ``(d_out, sum r_i)`` (on the factors)."""
    return torch.cat(list(Bs), dim=1)


def rank_index(ranks: Sequence[int], device=None) -> torch.Tensor:
    """Task index of every stacked rank row: ``(sum r_i,)`` long, e.g. ``[0,0,1,1,1]`` for ranks (2, 3)."""
    return torch.repeat_interleave(torch.arange(len(ranks), device=device), torch.as_tensor(list(ranks), device=device))


@dataclass
class RowSpace:
    """Orthonormal basis ``Q`` ``(d_in, R)`` of the rows of the stacked A_i, kept in compact Householder form.

    On the factors. ``reflectors`` ``(d_in, R)`` (the first
    ``R = min(d_in, sum r_i)`` columns of the first output of
    ``torch.geqrf(stack(A_i)^T)``) and ``tau`` ``(R,)`` (its second output)
    are LAPACK's representation of ``Q`` as a product of ``R`` Householder
    reflectors; ``coords`` ``(sum r_i, R)`` is ``C = stack(A_i) @ Q``, read off
    the triangular factor. HydraOpt's exact solver never needs ``Q`` itself,
    only ``Q @ V`` with ``r'`` columns (:meth:`apply`), which costs
    ``O(d_in R r')`` instead of the ``O(d_in R^2)`` of forming ``Q``.
    """

    reflectors: torch.Tensor
    tau: torch.Tensor
    coords: torch.Tensor

    @property
    def dim(self) -> int:
        """``R``, the number of basis vectors."""
        return int(self.tau.shape[0])

    def dense(self) -> torch.Tensor:
        """``Q`` ``(d_in, R)`` with orthonormal columns (the one ``torch.linalg.qr`` returns); costs ``O(d_in R^2)``."""
        return torch.linalg.householder_product(self.reflectors, self.tau)

    def apply(self, X: torch.Tensor) -> torch.Tensor:
        """``Q @ X`` ``(d_in, m)`` for ``X`` ``(R, m)`` by applying the reflectors (``torch.ormqr``); ``Q`` is not formed."""
        d_in, R = self.reflectors.shape
        if X.shape[0] != R:
            raise ValueError(f"RowSpace.apply: X has {X.shape[0]} rows, the basis has {R} vectors")
        X = X.to(self.reflectors.dtype)
        if d_in > R:
            X = torch.cat([X, X.new_zeros(d_in - R, X.shape[1])], dim=0)
        return torch.ormqr(self.reflectors, self.tau, X)


def row_space(As: Sequence[torch.Tensor]) -> RowSpace:
    """Householder QR of the stacked A_i^T without forming ``Q``: a :class:`RowSpace`.

    On the factors. Input: A_i ``(r_i, d_in)``. One ``torch.geqrf`` of
    ``stack(A_i)^T`` ``(d_in, sum r_i)``; the coordinates ``C = stack(A_i) Q``
    ``(sum r_i, R)`` are the transposed triangular factor, bitwise those of
    :func:`row_space_basis`. About half the cost of a QR that also forms ``Q``.
    """
    A_cat = stack_lora_a(As)
    reflectors, tau = torch.geqrf(A_cat.T)
    R = int(tau.shape[0])  # min(d_in, sum r_i)
    return RowSpace(reflectors[:, :R], tau, torch.triu(reflectors[:R]).T.contiguous())


def row_space_basis(As: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis of the row spaces of the A_i, by QR of the stacked A_i^T.

    On the factors. Input: A_i ``(r_i, d_in)``. Returns ``Q`` ``(d_in, R)`` with
    orthonormal columns, ``R = min(d_in, sum r_i)``, and the coordinates
    ``C = stack(A_i) @ Q`` ``(sum r_i, R)`` (from the triangular factor, no
    extra product). Rows of ``C`` belonging to task i are ``C_i = A_i Q``. When
    the A_i share rows, Q still spans their row space (it may be larger).
    :func:`row_space` gives the same basis without forming ``Q``.
    """
    basis = row_space(As)
    return basis.dense(), basis.coords


# ----------------------------------------------------------------------------- Gram forms


def block_sums(matrix: torch.Tensor, ranks_rows: Sequence[int], ranks_cols: Sequence[int] | None = None) -> torch.Tensor:
    """Sum a ``(sum r_i, sum r_j)`` matrix over its ``r_i x r_j`` blocks: ``(N_rows, N_cols)``."""
    ranks_cols = ranks_rows if ranks_cols is None else ranks_cols
    rows = rank_index(ranks_rows, matrix.device)
    cols = rank_index(ranks_cols, matrix.device)
    partial = torch.zeros(len(ranks_rows), matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    partial.index_add_(0, rows, matrix)
    out = torch.zeros(len(ranks_rows), len(ranks_cols), dtype=matrix.dtype, device=matrix.device)
    out.index_add_(1, cols, partial)
    return out


def delta_inner_products(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float],
    coords: torch.Tensor | None = None,
) -> torch.Tensor:
    """Frobenius inner products ``<dW_i, dW_j>`` of all task pairs, in factored form.

    On the factors: A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``. Uses
    ``<dW_i, dW_j> = s_i s_j sum((B_i^T B_j) * (A_i A_j^T))``: two
    ``(sum r, sum r)`` Grams and a block sum. ``coords`` (the ``C`` of
    :func:`row_space_basis`) replaces ``A A^T`` by the cheaper ``C C^T`` when
    R < d_in. Returns ``(N, N)`` in float64 (the block sums are accumulated in
    float64 to keep the small differences used by the spread exact).
    """
    ranks = [int(A.shape[0]) for A in As]
    A_part = coords if coords is not None else stack_lora_a(As)
    gram_a = matmul(A_part, A_part.T).double()
    B_cat = stack_lora_b(Bs)
    gram_b = matmul(B_cat.T, B_cat).double()
    s = torch.as_tensor([float(x) for x in scalings], dtype=torch.float64, device=gram_a.device)
    return block_sums(gram_a * gram_b, ranks) * s[:, None] * s[None, :]


def delta_norms_sq(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor], scalings: Sequence[float]) -> torch.Tensor:
    """``||dW_i||_F^2`` for every task, factored: ``s_i^2 sum((B_i^T B_i) * (A_i A_i^T))``; ``(N,)`` float64."""
    out = []
    for A, B, s in zip(As, Bs, scalings):
        out.append(float(s) ** 2 * ((B.T @ B).double() * (A @ A.T).double()).sum())
    return torch.stack(out)


def weighted_gram(
    coords: torch.Tensor,
    B_cat: torch.Tensor,
    row_coeffs: torch.Tensor,
    gram_b: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(MQ)^T (MQ)`` for ``M Q = sum_i c_i B_i C_i``, from ``r x r`` Gram blocks.

    On the factors of the tasks of one group. ``coords`` ``(n, R)`` are the
    stacked C_i = A_i Q, ``B_cat`` ``(d_out, n)`` the stacked B_i and
    ``row_coeffs`` ``(n,)`` the coefficient c_i repeated over task i's rank
    rows. With ``P = diag(row_coeffs) C`` and ``G = B_cat^T B_cat``, returns
    ``(P^T G P`` ``(R, R)``, ``P`` ``(n, R))``; the ``(d_out, R)`` matrix MQ is
    never formed. ``gram_b`` passes a precomputed ``B_cat^T B_cat``.
    """
    P = row_coeffs[:, None].to(coords.dtype) * coords
    G = matmul(B_cat.T, B_cat) if gram_b is None else gram_b
    H = matmul(P.T, matmul(G, P))
    return (H + H.T) / 2, P


@dataclass
class StackedGram:
    """The Gram form of HydraOpt's stacked group means ``S = [sqrt(W_1) M_1; ...; sqrt(W_K) M_K]``.

    ``basis``: the :class:`RowSpace` of the A_i, an orthonormal basis ``Q``
    ``(d_in, R)`` of their rows in Householder form (``basis.apply(X)`` =
    ``Q @ X``; the property ``Q`` forms it). ``H`` ``(R, R)`` =
    ``(SQ)^T (SQ)``. Per group k (in order): ``lora_b[k]`` the stacked B_i
    ``(d_out, n_k)`` and ``coords[k]`` = ``P_k`` ``(n_k, R)``, the stacked
    ``c_i C_i`` with ``c_i = w_i s_i / W_k``, so that
    ``M_k Q = lora_b[k] @ coords[k]`` (``n_k`` = sum of the group's ranks).
    ``spread`` = ``sum_i w_i ||dW_i - M_g(i)||^2`` and ``energy`` =
    ``sum_i w_i ||dW_i||^2``, both from ``r x r`` Grams (float).
    """

    basis: RowSpace
    H: torch.Tensor
    lora_b: list[torch.Tensor]
    coords: list[torch.Tensor]
    spread: float
    energy: float

    @property
    def Q(self) -> torch.Tensor:
        """The orthonormal basis ``(d_in, R)``, formed on each access (``O(d_in R^2)``; prefer ``basis.apply``)."""
        return self.basis.dense()


def stacked_gram(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    scalings: Sequence[float],
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
) -> StackedGram:
    """``(SQ)^T (SQ)`` of the factored exact solution (book chapter *HydraOpt step by step*) from ``r x r`` Gram blocks, on the factors.

    A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``, scalings s_i, weights w_i > 0,
    ``group_index[i]`` in ``0..n_groups-1``. With ``C_i = A_i Q`` and
    ``c_i = w_i s_i / W_k``:
    ``(SQ)^T (SQ) = sum_k W_k sum_{i,j in k} c_i c_j C_i^T (B_i^T B_j) C_j``,
    computed as ``P^T T`` with ``P`` the stacked ``P_k`` and ``T`` the stacked
    ``W_k (B_k^T B_k) P_k`` (one product; neither ``S`` ``(K d_out, d_in)`` nor
    ``SQ`` ``(K d_out, R)`` is formed). The spread uses the within-group inner
    products ``<dW_i, dW_j>`` (float64 sums):
    ``sum_{i in k} w_i ||dW_i||^2 - W_k ||M_k||^2`` per group. The basis comes
    from :func:`row_space` (``Q`` is not formed).
    """
    ranks = [int(A.shape[0]) for A in As]
    offsets = [0]
    for r in ranks:
        offsets.append(offsets[-1] + r)
    basis = row_space(As)
    C = basis.coords
    members_of = [[] for _ in range(n_groups)]
    for i, g in enumerate(group_index):
        members_of[int(g)].append(i)
    spread, energy = 0.0, 0.0
    lora_b, coords, T_all = [], [], []
    for members in members_of:
        rows = torch.cat([torch.arange(offsets[i], offsets[i + 1], device=C.device) for i in members])
        C_k = C[rows]
        B_k = stack_lora_b([Bs[i] for i in members])
        W_k = float(sum(float(weights[i]) for i in members))
        row_coeffs = torch.repeat_interleave(
            torch.as_tensor([float(weights[i]) * float(scalings[i]) / W_k for i in members], dtype=C.dtype, device=C.device),
            torch.as_tensor([ranks[i] for i in members], device=C.device),
        )
        G_k = B_k.T @ B_k  # the r x r blocks B_i^T B_j of the group
        P_k = row_coeffs[:, None] * C_k
        lora_b.append(B_k)
        coords.append(P_k)
        T_all.append(W_k * (G_k @ P_k))
        s_k = torch.as_tensor([float(scalings[i]) for i in members], dtype=torch.float64, device=C.device)
        w_k = torch.as_tensor([float(weights[i]) for i in members], dtype=torch.float64, device=C.device)
        ip = block_sums((C_k @ C_k.T).double() * G_k.double(), [ranks[i] for i in members]) * s_k[:, None] * s_k[None, :]
        group_energy = float((w_k * ip.diagonal()).sum())
        energy += group_energy
        if len(members) > 1:
            spread += max(group_energy - float((w_k[:, None] * w_k[None, :] * ip).sum()) / W_k, 0.0)
    H = torch.cat(coords).T @ torch.cat(T_all)
    return StackedGram(basis, (H + H.T) / 2, lora_b, coords, spread, energy)


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
    float64 ones; the large ones go through :func:`~.products.matmul_nt`, the start
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
    Xb = empty_buffer((m_max, d), dtype, device)  # basis X^T, rows orthonormal
    Zb = empty_buffer((m_max, d), dtype, device)  # (M X)^T
    Yb = empty_buffer((m_max, n), dtype, device)  # (A X)^T
    DYb = empty_buffer((n, m_max), dtype, device)  # D A X
    T = torch.zeros(m_max, m_max, dtype=torch.float64, device=device)  # X^T M X
    omega = _gaussian_start(n, p, int(seed)).to(device=device, dtype=dtype, copy=True)
    Xt = torch.linalg.qr(matmul_nt(apply_d(omega).T, A.T).T).Q.T  # a random block in the row space of M
    previous, residual, excess, it, m = math.inf, math.inf, math.nan, 0, 0
    Vt = Xt[:kk]
    theta = torch.zeros(kk, dtype=torch.float64)
    for it in range(1, int(max_iter) + 1):
        b = int(Xt.shape[0])
        Xb[m:m + b] = Xt
        Yb[m:m + b] = matmul_nt(Xt, A)  # (A X_j)^T
        DYb[:, m:m + b] = apply_d(Yb[m:m + b].T.contiguous())
        Zb[m:m + b] = matmul_nt(DYb[:, m:m + b].T, A.T)  # (M X_j)^T
        block = (Yb[:m + b] @ DYb[:, m:m + b]).double()  # X^T M X_j
        T[:m + b, m:m + b] = block
        T[m:m + b, :m + b] = block.T
        m += b
        theta, W = torch.linalg.eigh((T[:m, :m] + T[:m, :m].T) / 2)  # Rayleigh-Ritz on the whole basis
        theta, W = theta.flip(0), W.flip(1)
        Wk = W[:, :kk].to(dtype)
        Vt = matmul_nt(Wk.T, Xb[:m].T)  # Ritz vectors as rows, (k', d)
        norms = (matmul_nt(Wk.T, Zb[:m].T) - theta[:kk].to(dtype)[:, None] * Vt).norm(dim=1).double().cpu()
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
        Z = Z - matmul_nt(matmul_nt(Z, Xt), Xt.T)
    Q, R = torch.linalg.qr(Z.T)
    keep = R.diagonal().abs() > math.sqrt(torch.finfo(Z.dtype).eps) * scale
    if scale == 0 or not bool(keep.any()):
        return None
    Q = Q.T if bool(keep.all()) else Q[:, keep].T
    Q = Q - matmul_nt(matmul_nt(Q, Xt), Xt.T)
    return torch.linalg.qr(Q.T).Q.T


# ----------------------------------------------------------------------------- truncated SVD of a sum


@dataclass
class LowRankSVD:
    """Truncated SVD of ``M = sum_i c_i B_i A_i`` as LoRA factors (scaling 1).

    ``lora_a`` ``(rank, d_in)`` has orthonormal rows (right singular vectors),
    ``lora_b`` ``(d_out, rank)`` = left singular vectors times singular values,
    so ``M ~= lora_b @ lora_a``. ``singular_values`` ``(R,)`` are all of M's
    (descending; zero beyond its rank) and ``tail_energy`` =
    ``||M - lora_b @ lora_a||_F^2`` = sum of the squared singular values
    beyond ``rank``. Rows beyond ``R`` (when ``rank > R``) are zero.
    """

    lora_a: torch.Tensor
    lora_b: torch.Tensor
    singular_values: torch.Tensor
    tail_energy: float


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] >= rows:
        return x
    return torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])], dim=0)


def lowrank_svd(
    As: Sequence[torch.Tensor],
    Bs: Sequence[torch.Tensor],
    coeffs: Sequence[float],
    rank: int,
    module: str = "<module>",
) -> LowRankSVD:
    """Rank-``rank`` truncated SVD of ``M = sum_i coeffs[i] * B_i @ A_i`` without forming M.

    On the factors: A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``; fold each task's
    scaling into ``coeffs`` (e.g. ``coeffs[i] = lam * w_i * s_i``). Steps:
    C from :func:`row_space` (Q stays in Householder form); with
    ``P = diag(coeffs) C``, ``H = (MQ)^T (MQ)`` as ``E^T E`` with
    ``E = MQ = B_cat P`` ``(d_out, R)``, or as :func:`weighted_gram`'s
    ``P^T (B_cat^T B_cat) P`` when that is cheaper (large d_out); all
    eigenvalues of H (``eigvalsh``) and its top ``rank`` eigenvectors V
    (:func:`top_eigen`); ``lora_a = V^T Q^T`` (reflectors applied to V),
    ``lora_b = E V``. Cost ``O((sum r)^2 (d_in + d_out))``; no
    ``d_out x d_in`` term. Singular values come from eigenvalues of a Gram, so
    the tiny ones (below ~1e-3 of the largest in float32) are not accurate;
    the retained factors are.
    """
    check_factors(As, Bs, coeffs, module)
    if rank < 1:
        raise ValueError(f"module {module}: rank must be >= 1, got {rank}")
    ranks = [int(A.shape[0]) for A in As]
    basis = row_space(As)  # Q in Householder form: only Q V (rank columns) is ever needed
    C = basis.coords
    row_coeffs = torch.repeat_interleave(
        torch.as_tensor([float(c) for c in coeffs], dtype=C.dtype, device=C.device),
        torch.as_tensor(ranks, device=C.device),
    )
    B_cat = stack_lora_b(Bs)
    d_out, (n, R) = int(B_cat.shape[0]), C.shape
    P = row_coeffs[:, None] * C
    if d_out * (n * R + R * R / 2) < d_out * n * n / 2 + n * n * R + n * R * R:
        E = matmul(B_cat, P)  # M Q (d_out, R), when that is the cheaper way to H
        H = matmul(E.T, E)
    else:  # from the (n, n) Gram of B_cat (d_out large)
        E = None
        H = matmul(P.T, matmul(matmul(B_cat.T, B_cat), P))
    H = (H + H.T) / 2
    k = min(int(rank), R)
    values = torch.linalg.eigvalsh(H).flip(0).clamp_min(0)  # all of them (the singular values of M, squared)
    V = top_eigen(H, k).vectors  # (R, k): the top k only
    lora_a = _pad_rows(basis.apply(V).T.contiguous(), rank)
    lora_b = _pad_rows((E @ V if E is not None else B_cat @ (P @ V)).T, rank).T.contiguous()
    tail = float(values[rank:].double().sum())
    return LowRankSVD(lora_a, lora_b, values.sqrt(), tail)


def lora_inner(A1: torch.Tensor, B1: torch.Tensor, A2: torch.Tensor, B2: torch.Tensor) -> torch.Tensor:
    """``<B1 A1, B2 A2>_F = sum((B1^T B2) * (A1 A2^T))`` on the factors (A ``(r, d_in)``, B ``(d_out, r)``); a scalar tensor."""
    return ((B1.T @ B2) * (A1 @ A2.T)).sum()


# ----------------------------------------------------------------------------- dense references (tests, small examples)


def dense_delta(A: torch.Tensor, B: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """Dense ``dW = scaling * B @ A`` ``(d_out, d_in)`` (forms the full matrix)."""
    return scaling * (B @ A)


def dense_weighted_sum(As: Sequence[torch.Tensor], Bs: Sequence[torch.Tensor], coeffs: Sequence[float]) -> torch.Tensor:
    """Dense ``sum_i coeffs[i] * B_i @ A_i`` ``(d_out, d_in)``; reference for :func:`lowrank_svd`."""
    return sum(float(c) * (B @ A) for A, B, c in zip(As, Bs, coeffs))


def truncated_svd_dense(delta: torch.Tensor, rank: int, module: str = "<module>") -> LowRankSVD:
    """Rank-``rank`` truncated SVD of a dense delta ``(d_out, d_in)`` as LoRA factors.

    On dW. Used by the baselines, whose merged dW (after pruning and sign
    election) is dense by nature. ``lora_a`` ``(rank, d_in)`` = top right
    singular vectors, ``lora_b`` ``(d_out, rank)`` = left singular vectors times
    singular values (the convention of peft's SVD merges); signs are fixed so
    that the largest entry of every right singular vector is positive.
    """
    if delta.ndim != 2:
        raise AdapterError(f"module {module}: expected a 2-D delta (d_out, d_in), got shape {tuple(delta.shape)}")
    if rank < 1:
        raise ValueError(f"module {module}: rank must be >= 1, got {rank}")
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank, S.shape[0])
    Vh_k, U_k = Vh[:k], U[:, :k]
    pivot = Vh_k.abs().argmax(dim=1)
    signs = torch.sign(Vh_k[torch.arange(k, device=delta.device), pivot])
    signs[signs == 0] = 1
    lora_a = _pad_rows((signs[:, None] * Vh_k).contiguous(), rank)
    lora_b = _pad_rows((U_k * (S[:k] * signs)).T, rank).T.contiguous()
    tail = float((S[k:].double() ** 2).sum())
    return LowRankSVD(lora_a, lora_b, S, tail)


def dense_stacked_floor(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    group_index: Sequence[int],
    rank: int,
) -> dict[str, float]:
    """Eigen-free dense reference for HydraOpt's Eckart-Young floor (tests only).

    On dW: ``deltas`` are the dense ``(d_out, d_in)`` updates, ``weights`` w_i,
    ``group_index[i]`` the head of task i. Forms ``M_k`` (weighted group means),
    the within-group spread ``sum_i w_i ||dW_i - M_g(i)||^2`` and the stacked
    ``S = [sqrt(W_1) M_1; ...; sqrt(W_K) M_K]`` ``(K d_out, d_in)``; its
    truncation term is the sum of squared singular values beyond ``rank``.
    Returns ``{"spread", "truncation", "floor"}`` as floats.
    """
    K = max(group_index) + 1
    spread = 0.0
    blocks = []
    for k in range(K):
        members = [i for i, g in enumerate(group_index) if g == k]
        W = sum(float(weights[i]) for i in members)
        M = sum(float(weights[i]) * deltas[i].double() for i in members) / W
        spread += sum(float(weights[i]) * float(((deltas[i].double() - M) ** 2).sum()) for i in members)
        blocks.append(W**0.5 * M)
    S = torch.cat(blocks, dim=0)
    sv = torch.linalg.svdvals(S)
    truncation = float((sv[rank:] ** 2).sum())
    return {"spread": spread, "truncation": truncation, "floor": spread + truncation}
