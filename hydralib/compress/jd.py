"""Compress then Serve (Brüel-Gabrielsson et al., ICML 2025, arXiv:2407.00066): a shared basis per module.

Per module, every task's update is approximated as ``dW_i ~ U Sigma_i V^T`` with
U ``(d_out, c)`` and V ``(d_in, c)`` shared by all tasks and ``Sigma_i`` ``(c, c)``
per task ("full"), or diagonal ``(c,)`` ("diag"). Objective:

    L = sum_i || U Sigma_i V^T - dW_i ||_F^2,   dW_i = s_i B_i A_i.

Fitted by alternating least squares on the factors; no ``d_out x d_in`` matrix is formed:

* full: with U, V orthonormal the best ``Sigma_i = U^T dW_i V = (U^T s_i B_i)(A_i V)``, so
  ``L = sum ||dW_i||^2 - sum ||Sigma_i||^2``; given V, the best U is the top-c left
  singular vectors of ``[dW_1 V, ..., dW_N V]`` (``d_out x N c``, from ``B_i (A_i V)``),
  and likewise V given U. Each step is an exact block minimum, so L never increases.
* diag: U, V unconstrained; each of ``sigma_i`` (a c x c system with
  ``(U^T U) o (V^T V)``), U (``U G = sum_i dW_i V D_i``) and V is the exact least-squares
  minimum given the others, so L never increases either.

Start: U and V span the top-c directions of the stacked column and row spaces
(``[s_i B_i R_i^T]`` with ``A_i^T = Q_i R_i``, and the mirror). With ``c >= sum_i r_i``
they span every task's update and the fit is exact (the diagonal variant then starts
from each task's own SVD, one block of columns per task).

Storage per module: ``c (d_in + d_out) + N c^2`` numbers (``N c`` diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class JDModule:
    """The fit at one module: ``U (d_out, c)``, ``V (d_in, c)``, ``sigma (N, c, c)`` or ``(N, c)``, loss history."""

    U: torch.Tensor
    V: torch.Tensor
    sigma: torch.Tensor
    losses: list[float]
    energy: float


def _orth_top(Y: torch.Tensor, c: int, seed: int = 0) -> torch.Tensor:
    """``(rows, c)`` orthonormal columns spanning the top-c left singular directions of ``Y`` (completed at random
    when Y has fewer than c directions)."""
    rows = Y.shape[0]
    if Y.shape[1] >= rows:  # the (rows, rows) Gram is smaller
        vals, vecs = torch.linalg.eigh(Y @ Y.T)
        U = vecs.flip(1)[:, :c]
    else:
        U = torch.linalg.svd(Y, full_matrices=False).U[:, :c]
    if U.shape[1] < c:
        g = torch.Generator().manual_seed(seed)
        extra = torch.randn(rows, c - U.shape[1], generator=g, dtype=Y.dtype)
        U = torch.linalg.qr(torch.cat([U, extra], 1)).Q
    return U


def _energy(As, Bs) -> float:
    return float(sum(((B.T @ B) * (A @ A.T)).sum() for A, B in zip(As, Bs)))


def _loss_full(As, Bs, U, V, energy) -> tuple[float, torch.Tensor]:
    sigma = torch.stack([(U.T @ B) @ (A @ V) for A, B in zip(As, Bs)])
    return energy - float((sigma ** 2).sum()), sigma


def _solve_sigma_diag(As, Bs, U, V) -> torch.Tensor:
    G = (U.T @ U) * (V.T @ V)
    rhs = torch.stack([((U.T @ B) * (A @ V).T).sum(1) for A, B in zip(As, Bs)])  # diag(U^T dW_i V)
    return (torch.linalg.pinv(G, hermitian=True) @ rhs.T).T


def _loss_diag(As, Bs, U, V, sigma, energy) -> float:
    G = (U.T @ U) * (V.T @ V)
    total = energy
    for A, B, d in zip(As, Bs, sigma):
        total += float(d @ G @ d) - 2 * float((((U.T @ B) * (A @ V).T).sum(1) * d).sum())
    return total


def fit_module(As, Bs, scalings, c: int, diagonal: bool = False, iters: int = 30, tol: float = 1e-7,
               seed: int = 0) -> JDModule:
    """ALS fit of one module (see the module docstring). A_i ``(r_i, d_in)``, B_i ``(d_out, r_i)``; works on the factors,
    in float64. ``c`` <= min(d_out, d_in). Stops after ``iters`` sweeps or when the loss drops by less than ``tol``
    of the energy."""
    As = [A.double() for A in As]
    Bs = [float(s) * B.double() for B, s in zip(Bs, scalings)]
    d_out, d_in = Bs[0].shape[0], As[0].shape[1]
    if not 1 <= c <= min(d_out, d_in):
        raise ValueError(f"compress then serve: c must be in [1, min(d_out, d_in) = {min(d_out, d_in)}], got {c}")
    energy = _energy(As, Bs)
    total_rank = sum(int(A.shape[0]) for A in As)
    if diagonal and c >= total_rank:  # each task's own SVD, one block of columns per task: exact
        Us, Vs, blocks = [], [], []
        for A, B in zip(As, Bs):
            Qa, Ra = torch.linalg.qr(A.T)
            Qb, Rb = torch.linalg.qr(B)
            u, s, vh = torch.linalg.svd(Rb @ Ra.T)
            Us.append(Qb @ u)
            Vs.append(Qa @ vh.T)
            blocks.append(s)
        U = torch.cat(Us + [torch.zeros(d_out, c - total_rank, dtype=torch.float64)], 1)
        V = torch.cat(Vs + [torch.zeros(d_in, c - total_rank, dtype=torch.float64)], 1)
        sigma = torch.zeros(len(As), c, dtype=torch.float64)
        offset = 0
        for i, s in enumerate(blocks):
            sigma[i, offset: offset + len(s)] = s
            offset += len(s)
        return JDModule(U, V, sigma, [_loss_diag(As, Bs, U, V, sigma, energy)], energy)
    Y = torch.cat([B @ torch.linalg.qr(A.T).R.T for A, B in zip(As, Bs)], 1)  # column spaces
    Z = torch.cat([A.T @ torch.linalg.qr(B).R.T for A, B in zip(As, Bs)], 1)  # row spaces
    U, V = _orth_top(Y, c, seed), _orth_top(Z, c, seed + 1)
    losses = []
    if not diagonal:
        loss, sigma = _loss_full(As, Bs, U, V, energy)
        losses.append(loss)
        for _ in range(iters):
            U = _orth_top(torch.cat([B @ (A @ V) for A, B in zip(As, Bs)], 1), c, seed)
            V = _orth_top(torch.cat([A.T @ (B.T @ U) for A, B in zip(As, Bs)], 1), c, seed + 1)
            loss, sigma = _loss_full(As, Bs, U, V, energy)
            losses.append(loss)
            if losses[-2] - loss <= tol * energy:
                break
        return JDModule(U, V, sigma, losses, energy)
    sigma = _solve_sigma_diag(As, Bs, U, V)
    losses.append(_loss_diag(As, Bs, U, V, sigma, energy))
    for _ in range(iters):
        G = sum(torch.outer(d, d) for d in sigma) * (V.T @ V)
        rhs = sum(B @ ((A @ V) * d) for A, B, d in zip(As, Bs, sigma))
        U = rhs @ torch.linalg.pinv(G, hermitian=True)
        G = sum(torch.outer(d, d) for d in sigma) * (U.T @ U)
        rhs = sum(A.T @ ((B.T @ U) * d) for A, B, d in zip(As, Bs, sigma))
        V = rhs @ torch.linalg.pinv(G, hermitian=True)
        norms = V.norm(dim=0).clamp_min(1e-300)  # rescale V's columns into sigma: the objective is unchanged
        V = V / norms
        sigma = _solve_sigma_diag(As, Bs, U, V)
        losses.append(_loss_diag(As, Bs, U, V, sigma, energy))
        if losses[-2] - losses[-1] <= tol * energy:
            break
    return JDModule(U, V, sigma, losses, energy)


def compress_then_serve(aset, c: int, diagonal: bool = False, codec: str = "fp16", iters: int = 30, tasks=None):
    """Compress then Serve on every module of ``aset`` (a jd :class:`~.container.CompressedAdapters`).

    ``c``: basis size (clipped to ``min(d_out, d_in)`` at each module). ``codec`` applies to U and V;
    sigma stays in fp16. ``info``: relative loss (before the codec) and the ALS sweeps per module.
    """
    from .container import CompressedAdapters

    tasks = list(tasks or aset.tasks)
    factors, shapes, loss, energy, sweeps, used = {}, {}, 0.0, 0.0, {}, {}
    for module in aset.modules:
        triples = [aset.factors(t, module) for t in tasks]
        d_out, d_in = aset.shape(module)
        used[module] = min(c, d_out, d_in)
        fit = fit_module([A for A, _, _ in triples], [B for _, B, _ in triples], [s for _, _, s in triples],
                         used[module], diagonal=diagonal, iters=iters)
        factors[module] = {"U": fit.U.float(), "V": fit.V.float(), "sigma": fit.sigma.float()}
        shapes[module] = (d_out, d_in)
        loss, energy, sweeps[module] = loss + max(fit.losses[-1], 0.0), energy + fit.energy, len(fit.losses) - 1
    name = f"jd-{'diag' if diagonal else 'full'}-c{c}" + ("" if codec == "fp16" else f"+{codec}")
    return CompressedAdapters.build(name, "jd", tasks, tasks, {t: t for t in tasks}, factors,
                                    {"U": codec, "V": codec, "sigma": "fp16"}, shapes, base_model=aset.base_model,
                                    info={"c": c, "c_used": sorted(set(used.values())), "diagonal": diagonal,
                                          "fit_relative_loss": loss / energy if energy > 0 else float("nan"),
                                          "max_sweeps": max(sweeps.values())})
