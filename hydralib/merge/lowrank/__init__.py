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

The package's parts: :mod:`.factors` (checks, stacking, row space, Gram
forms), :mod:`.eigen` (top eigenpairs, also of ``A^T D A`` on the factors)
and :mod:`.svd` (truncated SVDs as LoRA factors, and the dense references).
"""

from __future__ import annotations

from .eigen import (
    SUBSPACE_MIN_SIZE,
    FactoredEigen,
    TopEigen,
    _fix_signs,  # noqa: F401 (importable from here before the split)
    factored_top_eigen,
    top_eigen,
    top_eigenpairs,
)
from .factors import (
    RowSpace,
    StackedGram,
    block_sums,
    check_factors,
    delta_inner_products,
    delta_norms_sq,
    lora_inner,
    rank_index,
    row_space,
    row_space_basis,
    stack_lora_a,
    stack_lora_b,
    stacked_gram,
    weighted_gram,
)
from .svd import (
    LowRankSVD,
    dense_delta,
    dense_stacked_floor,
    dense_weighted_sum,
    lowrank_svd,
    truncated_svd_dense,
)

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
