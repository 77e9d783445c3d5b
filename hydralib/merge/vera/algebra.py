"""Per-module VeRA algebra: updates, masked norms, the HydraOpt objective and its floor, on the vectors.

At one module, tasks i = 1..N have VeRA vectors ``lambda_b_i`` ``(d_out,)`` and
``lambda_d_i`` ``(r,)`` over the frozen projections ``A = vera_A`` ``(r, d_in)``
and ``B = vera_B`` ``(d_out, r)`` shared by every adapter:

    dW_i = diag(b_i) B diag(d_i) A = (B o L_i) A,        L_i = b_i d_i^T  (d_out, r), rank one,

with ``o`` the entrywise product. The VeRA HydraOpt analogue keeps one vector
shared by all tasks and one vector per head (side ``"d"``: shared
``lambda_d'``, heads ``lambda_b'_k``; side ``"b"``: the mirror) and minimises

    L = sum_i w_i ||dW'_g(i) - dW_i||_F^2 .

Factored algebra (never a ``d_out x d_in`` matrix). For any X ``(d_out, r)``,
``||(B o X) A||_F^2 = tr((B o X) G_A (B o X)^T)`` with ``G_A = A A^T`` ``(r, r)``;
it is evaluated as ``||(B o X) R||_F^2`` where ``R`` ``(r, m)`` is a square
root ``G_A = R R^T`` (``R = R_qr^T`` from the QR of ``A^T``), which is exact,
non-negative and free of cancellation. For rank-one X it reduces to Gram forms:

    ||dW||^2     = d^T (G_A o B^T diag(b o b) B) d,
    <dW, dW'>   = d^T (G_A o B^T diag(b o b') B) d' = sum_j b_j b'_j c_j(d, d'),
    c_j(u, v)   = (B_j o u)^T G_A (B_j o v)          (B_j: row j of B),

and with ``P_i = B o ((B o d_i) G_A)`` ``(d_out, r)`` one has
``c_j(u, d_i) = (P_i u)_j`` and ``(G_A o B^T diag(x) B) d_i = P_i^T x``.

:func:`gram_root`, :func:`masked_norms_sq` and :func:`vera_delta` are the
algebra above; :func:`vera_objective` the loss (float64) and
:func:`vera_floor` its lower bound for a grouping (the within-group spread of
dW). The solvers are in :mod:`hydralib.merge.vera.solvers`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ...errors import AdapterError

__all__ = ["VERA_SIDES", "gram_root", "masked_norms_sq", "vera_delta", "vera_objective", "vera_floor"]

VERA_SIDES = ("d", "b")
_F64 = torch.float64


def gram_root(vera_A: torch.Tensor) -> torch.Tensor:
    """A square root ``R`` ``(r, m)`` of ``G_A = A A^T`` (``R R^T = G_A``), ``m = min(r, d_in)``; float64.

    On the projections: ``A`` ``(r, d_in)``. From the QR of ``A^T = Q R_qr``:
    ``A = R_qr^T Q^T`` with orthonormal ``Q``, so ``||X A||_F = ||X R_qr^T||_F``
    for any X ``(., r)``.
    """
    _, r_qr = torch.linalg.qr(vera_A.to(_F64).T, mode="reduced")
    return r_qr.T.contiguous()


def masked_norms_sq(X: torch.Tensor, vera_B: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``||(B o X) A||_F^2`` for X ``(..., d_out, r)``, via ``root`` = :func:`gram_root` of A; shape ``(...)``.

    On the vectors' outer products (``X = lambda_b lambda_d^T`` gives
    ``||dW||^2``); no ``d_out x d_in`` matrix is formed. Cost ``O(d_out r m)`` per X.
    """
    Z = vera_B.to(root.dtype) * X.to(root.dtype)
    return (Z @ root).pow(2).sum(dim=(-2, -1))


def vera_delta(lambda_b: torch.Tensor, lambda_d: torch.Tensor, vera_A: torch.Tensor, vera_B: torch.Tensor) -> torch.Tensor:
    """Dense ``dW = diag(lambda_b) B diag(lambda_d) A`` ``(d_out, d_in)`` (forms the full matrix; for references).

    ``lambda_b`` ``(d_out,)``, ``lambda_d`` ``(r,)``, ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``
    (already sliced to the module).
    """
    return (lambda_b[:, None] * vera_B) @ (lambda_d[:, None] * vera_A)


def _check_vectors(lambda_b, lambda_d, vera_A, vera_B, module):
    if lambda_b.ndim != 2 or lambda_d.ndim != 2 or lambda_b.shape[0] != lambda_d.shape[0] or lambda_b.shape[0] == 0:
        raise AdapterError(
            f"module {module}: lambda_b {tuple(lambda_b.shape)} / lambda_d {tuple(lambda_d.shape)} are not (N, d_out) / (N, r)"
        )
    n, d_out = lambda_b.shape
    r = lambda_d.shape[1]
    if vera_A.ndim != 2 or vera_B.ndim != 2 or vera_A.shape[0] != r or tuple(vera_B.shape) != (d_out, r):
        raise AdapterError(
            f"module {module}: vera_A {tuple(vera_A.shape)} / vera_B {tuple(vera_B.shape)} are not (r, d_in) / (d_out, r) "
            f"for r={r}, d_out={d_out}"
        )
    for name, t in (("lambda_b", lambda_b), ("lambda_d", lambda_d), ("vera_A", vera_A), ("vera_B", vera_B)):
        if not torch.isfinite(t).all():
            raise AdapterError(f"module {module}: {name} has NaN/Inf values")


def _per_task(shared, heads, gidx, side):
    """Per-task ``(lambda_b' (N, d_out), lambda_d' (N, r))`` from a shared vector and heads."""
    if side == "d":
        return heads[gidx], shared[None, :].expand(len(gidx), -1)
    return shared[None, :].expand(len(gidx), -1), heads[gidx]


def vera_objective(
    shared: torch.Tensor,
    heads: torch.Tensor,
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    side: str = "d",
) -> float:
    """``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` on the vectors, in float64, no dense dW.

    Side ``"d"``: ``shared`` is lambda_d' ``(r,)``, ``heads`` the lambda_b'_k
    ``(K, d_out)``; side ``"b"``: ``shared`` is lambda_b' ``(d_out,)``, ``heads``
    the lambda_d'_k ``(K, r)``. Tasks: ``lambda_b`` ``(N, d_out)``, ``lambda_d``
    ``(N, r)``; projections ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``.
    Each term is ``||(B o X_i) A||^2`` with ``X_i = b'_g d'_g^T - b_i d_i^T``
    ``(d_out, r)``, evaluated by :func:`masked_norms_sq` (cost ``O(N d_out r^2)``).
    """
    if side not in VERA_SIDES:
        raise ValueError(f"side must be one of {VERA_SIDES}, got {side!r}")
    device = lambda_b.device
    root = gram_root(vera_A.to(device))
    gidx = torch.as_tensor(list(group_index), device=device)
    w = torch.as_tensor(weights, dtype=_F64).to(device)
    lbp, ldp = _per_task(shared.to(device, _F64), heads.to(device, _F64), gidx, side)
    LB, LD = lambda_b.to(_F64), lambda_d.to(_F64)
    X = lbp[:, :, None] * ldp[:, None, :] - LB[:, :, None] * LD[:, None, :]
    return float((w * masked_norms_sq(X, vera_B.to(device), root)).sum())


def _floor_and_energy(LB, LD, vera_B, root, w, gidx, n_groups):
    """``(spread, energy)`` in float64: ``sum_i w_i ||dW_i - M_g(i)||^2`` and ``sum_i w_i ||dW_i||^2``."""
    L = LB[:, :, None] * LD[:, None, :]  # (N, d_out, r)
    Wk = torch.zeros(n_groups, dtype=_F64, device=LB.device).index_add_(0, gidx, w)
    mean = torch.zeros((n_groups,) + tuple(L.shape[1:]), dtype=_F64, device=LB.device).index_add_(0, gidx, w[:, None, None] * L)
    mean = mean / Wk[:, None, None]
    spread = float((w * masked_norms_sq(L - mean[gidx], vera_B, root)).sum())
    energy = float((w * masked_norms_sq(L, vera_B, root)).sum())
    return spread, energy


def vera_floor(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
) -> float:
    """Lower bound of :func:`vera_objective` for a grouping: ``sum_i w_i ||dW_i - M_g(i)||_F^2`` (float64).

    ``M_k = sum_{i in k} w_i dW_i / W_k`` is the best single update for head k
    when any update is allowed; a VeRA head (a rank-one ``b d^T`` pushed
    through the projections, with one side shared) can only do worse or equal.
    On the vectors (``(B o (L_i - mean_k L)) A`` with ``L_i = b_i d_i^T``).
    """
    root = gram_root(vera_A.to(lambda_b.device))
    gidx = torch.as_tensor(list(group_index), device=lambda_b.device)
    w = torch.as_tensor(weights, dtype=_F64).to(lambda_b.device)
    return _floor_and_energy(lambda_b.to(_F64), lambda_d.to(_F64), vera_B.to(lambda_b.device, _F64), root, w, gidx,
                             int(gidx.max()) + 1)[0]


def _ratio(num: float, den: float) -> float:
    """``num / den``; 0 when both are 0, ``inf`` when only ``den`` is."""
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf
