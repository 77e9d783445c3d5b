"""Factored algebra on LoRA factors: checks, stacking, the row space of the stacked lora_A, Gram forms.

Task i at one module has A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)`` and a
scaling s_i; nothing here forms a ``d_out x d_in`` matrix. Inner products of
deltas are traces of ``r x r`` Grams
(``<dW_i, dW_j>_F = s_i s_j sum((B_i^T B_j) * (A_i A_j^T))``); with ``Q`` an
orthonormal basis of the stacked A_i's row space (:func:`row_space`, kept as
Householder reflectors), :func:`stacked_gram` assembles HydraOpt's ``R x R``
matrix ``(SQ)^T (SQ)`` from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ...errors import AdapterError

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
    "lora_inner",
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
    gram_a = (A_part @ A_part.T).double()
    B_cat = stack_lora_b(Bs)
    gram_b = (B_cat.T @ B_cat).double()
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
    G = B_cat.T @ B_cat if gram_b is None else gram_b
    H = P.T @ (G @ P)
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


def lora_inner(A1: torch.Tensor, B1: torch.Tensor, A2: torch.Tensor, B2: torch.Tensor) -> torch.Tensor:
    """``<B1 A1, B2 A2>_F = sum((B1^T B2) * (A1 A2^T))`` on the factors (A ``(r, d_in)``, B ``(d_out, r)``); a scalar tensor."""
    return ((B1.T @ B2) * (A1 @ A2.T)).sum()
