"""Truncated SVD as LoRA factors: of a sum of LoRAs on the factors, and of a dense delta (the baselines' dW).

:func:`lowrank_svd` works on the factors (``O((sum r)^2 (d_in + d_out))``, no
``d_out x d_in`` term); :func:`truncated_svd_dense` on a dense ``(d_out,
d_in)`` dW, for the baselines whose merged update is dense by nature. The
remaining ``dense_*`` functions form the full matrices: references for the
tests and for small examples, never used by the solvers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ...errors import AdapterError
from .eigen import top_eigen
from .factors import check_factors, row_space, stack_lora_b

__all__ = ["LowRankSVD", "lowrank_svd", "dense_delta", "dense_weighted_sum", "truncated_svd_dense", "dense_stacked_floor"]


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
        E = B_cat @ P  # M Q (d_out, R), when that is the cheaper way to H
        H = E.T @ E
    else:  # from the (n, n) Gram of B_cat (d_out large)
        E = None
        H = P.T @ ((B_cat.T @ B_cat) @ P)
    H = (H + H.T) / 2
    k = min(int(rank), R)
    values = torch.linalg.eigvalsh(H).flip(0).clamp_min(0)  # all of them (the singular values of M, squared)
    V = top_eigen(H, k).vectors  # (R, k): the top k only
    lora_a = _pad_rows(basis.apply(V).T.contiguous(), rank)
    lora_b = _pad_rows((E @ V if E is not None else B_cat @ (P @ V)).T, rank).T.contiguous()
    tail = float(values[rank:].double().sum())
    return LowRankSVD(lora_a, lora_b, values.sqrt(), tail)


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
