"""Per-module VeRA HydraOpt solvers: alternating least squares and Adam on the shared vector and the heads.

At one module, tasks i = 1..N have VeRA vectors ``lambda_b_i`` ``(d_out,)`` and
``lambda_d_i`` ``(r,)`` over the frozen projections ``A = vera_A`` ``(r, d_in)``
and ``B = vera_B`` ``(d_out, r)``; the VeRA HydraOpt analogue keeps one vector
shared by all tasks and one vector per head (side ``"d"``: shared
``lambda_d'``, heads ``lambda_b'_k``; side ``"b"``: the mirror) and minimises
``L = sum_i w_i ||dW'_g(i) - dW_i||_F^2`` through the Gram forms of
:mod:`hydralib.merge.vera.algebra` (never a ``d_out x d_in`` matrix).

Contents
--------
* :func:`solve_vera_als` (alternating least squares: every half-step exact) and
  :func:`solve_vera_adam` (the paper's iterative optimisation), both returning a
  :class:`VeraModuleSolution`, registered by name in :data:`VERA_SOLVERS`;
* the objective they minimise (:func:`~.algebra.vera_objective`, float64) and
  its floor (:func:`~.algebra.vera_floor`) are in :mod:`.algebra`.

The adapter-set entry point is :func:`hydralib.merge.vera.vera_hydraopt`;
everything here and in :mod:`.algebra` acts on one module's stacked vectors.

Example
-------
>>> import torch
>>> from hydralib.merge.vera import VERA_SOLVERS, solve_vera_als, vera_floor
>>> g = torch.Generator().manual_seed(0)
>>> LB, LD = torch.randn(3, 12, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
>>> vA, vB = torch.randn(4, 10, generator=g, dtype=torch.float64), torch.randn(12, 4, generator=g, dtype=torch.float64)
>>> sol = solve_vera_als(LB, LD, vA, vB, [1.0] * 3, [0, 0, 1], 2, side="d", device="cpu")
>>> sol.shared.shape, sol.heads.shape                  # shared lambda_d' (r,), heads lambda_b'_k (K, d_out)
(torch.Size([4]), torch.Size([2, 12]))
>>> sol.floor <= sol.loss <= sol.energy, sol.floor == vera_floor(LB, LD, vA, vB, [1.0] * 3, [0, 0, 1])
(True, True)
>>> sorted(VERA_SOLVERS)
['adam', 'als']
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..hydraopt import check_grouping
from .algebra import _F64, VERA_SIDES, _check_vectors, _floor_and_energy, _ratio, gram_root, vera_objective

__all__ = ["VeraModuleSolution", "solve_vera_als", "solve_vera_adam", "VeraSolver", "VERA_SOLVERS"]


@dataclass
class _Problem:
    """Precomputed quantities at one module (all on one device, in one dtype).

    ``LB`` ``(N, d_out)``, ``LD`` ``(N, r)``, ``B`` ``(d_out, r)``, ``G`` = A A^T
    ``(r, r)``, ``P`` ``(N, d_out, r)`` with ``P_i = B o ((B o d_i) G)``, ``w``
    ``(N,)``, ``gidx`` ``(N,)``, ``Wk`` ``(K,)`` group weights, ``energy`` =
    ``sum_i w_i ||dW_i||^2`` (a Python float).
    """

    side: str
    LB: torch.Tensor
    LD: torch.Tensor
    B: torch.Tensor
    G: torch.Tensor
    P: torch.Tensor
    w: torch.Tensor
    gidx: torch.Tensor
    Wk: torch.Tensor
    energy: float

    @property
    def n_groups(self) -> int:
        return int(self.Wk.shape[0])

    def to(self, dtype) -> "_Problem":
        cast = {k: getattr(self, k).to(dtype) for k in ("LB", "LD", "B", "G", "P", "w", "Wk")}
        return _Problem(self.side, gidx=self.gidx, energy=self.energy, **cast)


def _make_problem(LB, LD, vA, vB, w, gidx, n_groups, side, device) -> _Problem:
    LB, LD, vA, vB = (t.to(device=device, dtype=_F64) for t in (LB, LD, vA, vB))
    G = vA @ vA.T
    P = vB[None] * ((vB[None] * LD[:, None, :]) @ G)
    w = w.to(device=device, dtype=_F64)
    gidx_t = torch.as_tensor(gidx, device=device)
    Wk = torch.zeros(n_groups, dtype=_F64, device=device).index_add_(0, gidx_t, w)
    energy = float((w * (LB * LB * torch.einsum("njr,nr->nj", P, LD)).sum(1)).sum())
    return _Problem(side, LB, LD, vB, G, P, w, gidx_t, Wk, energy)


def _psd_solve(H: torch.Tensor, C: torch.Tensor, rtol: float = 1e-12) -> torch.Tensor:
    """Minimum-norm least-squares solution of ``H X = C`` for symmetric PSD ``H`` (eigen-pseudo-inverse)."""
    values, vectors = torch.linalg.eigh(H.to(_F64))
    keep = values > rtol * values.abs().max().clamp_min(1e-300)
    inv = torch.where(keep, 1.0 / torch.where(keep, values, torch.ones_like(values)), torch.zeros_like(values))
    return (vectors @ (inv[:, None] * (vectors.T @ C.to(_F64)))).to(C.dtype)


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = den > 1e-14 * den.abs().max().clamp_min(1e-300)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _c_self(B, G, u):
    """``c_j(u, u) = (B_j o u)^T G (B_j o u)`` for every row j: ``(d_out,)``."""
    Bu = B * u[None, :]
    return ((Bu @ G) * Bu).sum(1)


def _heads_step(p: _Problem, shared: torch.Tensor) -> torch.Tensor:
    """Exact minimiser over the heads given the shared vector (closed form).

    Side d (shared lambda_d' = u): per head k and output row j,
    ``b'_kj = sum_{i in k} w_i b_ij c_j(u, d_i) / (W_k c_j(u, u))``.
    Side b (shared lambda_b' = v): per head k,
    ``d'_k = H^+ sum_{i in k} w_i P_i^T (v o b_i) / W_k`` with ``H = G o B^T diag(v o v) B`` ``(r, r)``.
    """
    if p.side == "d":
        Pu = p.P @ shared  # (N, d_out): c_j(u, d_i)
        num = torch.zeros(p.n_groups, p.LB.shape[1], dtype=shared.dtype, device=shared.device)
        num.index_add_(0, p.gidx, p.w[:, None] * p.LB * Pu)
        den = p.Wk[:, None] * _c_self(p.B, p.G, shared)[None, :]
        return _safe_divide(num, den)
    H = p.G * ((p.B * (shared * shared)[:, None]).T @ p.B)
    c = torch.einsum("njr,nj->nr", p.P, p.w[:, None] * shared[None, :] * p.LB)  # (N, r)
    ck = torch.zeros(p.n_groups, p.LD.shape[1], dtype=shared.dtype, device=shared.device).index_add_(0, p.gidx, c)
    return _psd_solve(H, ck.T).T / p.Wk[:, None]


def _shared_step(p: _Problem, heads: torch.Tensor) -> torch.Tensor:
    """Exact minimiser over the shared vector given the heads.

    Side d (heads b'_k): ``u = H^+ c`` with ``H = G o B^T diag(sum_k W_k b'_k o b'_k) B``
    ``(r, r)`` and ``c = sum_i w_i P_i^T (b'_g(i) o b_i)`` ``(r,)``.
    Side b (heads d'_k): per output row j,
    ``v_j = sum_i w_i b_ij c_j(d'_g(i), d_i) / sum_k W_k c_j(d'_k, d'_k)``; the
    denominator is ``diag(B (G o S) B^T)`` with ``S = sum_k W_k d'_k d'_k^T``.
    """
    if p.side == "d":
        s = (p.Wk[:, None] * heads * heads).sum(0)
        H = p.G * ((p.B * s[:, None]).T @ p.B)
        c = torch.einsum("njr,nj->r", p.P, p.w[:, None] * heads[p.gidx] * p.LB)
        return _psd_solve(H, c[:, None])[:, 0]
    Pd = torch.einsum("njr,nr->nj", p.P, heads[p.gidx])
    num = (p.w[:, None] * p.LB * Pd).sum(0)
    S = (p.Wk[:, None, None] * heads[:, :, None] * heads[:, None, :]).sum(0)
    den = ((p.B @ (p.G * S)) * p.B).sum(1)
    return _safe_divide(num, den)


def _expanded_loss(p: _Problem, shared: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i (||dW'_g||^2 - 2 <dW'_g, dW_i>) + energy`` through the Gram forms (differentiable).

    Cost ``O(d_out r^2 + N d_out r)`` per call; exact up to cancellation when the
    loss is tiny relative to the energy (the reported losses use :func:`vera_objective`).
    """
    if p.side == "d":
        fit = (p.Wk[:, None] * heads * heads * _c_self(p.B, p.G, shared)[None, :]).sum()
        cross = (p.w[:, None] * heads[p.gidx] * p.LB * (p.P @ shared)).sum()
    else:
        S = (p.Wk[:, None, None] * heads[:, :, None] * heads[:, None, :]).sum(0)
        fit = (shared * shared * ((p.B @ (p.G * S)) * p.B).sum(1)).sum()
        cross = (p.w[:, None] * shared[None, :] * p.LB * torch.einsum("njr,nr->nj", p.P, heads[p.gidx])).sum()
    return fit - 2 * cross + p.energy


def _shared_side(p: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """(the tasks' vectors on the shared side, those on the head side)."""
    return (p.LD, p.LB) if p.side == "d" else (p.LB, p.LD)


def _gauge_scale(p: _Problem) -> tuple[float, torch.Tensor]:
    own, _ = _shared_side(p)
    rms = math.sqrt(float((p.w * (own * own).sum(1)).sum() / p.w.sum()))
    return rms, (p.w[:, None] * own).sum(0)


def _init_shared(p: _Problem, init: str, seed: int) -> torch.Tensor:
    """The shared vector to start from (before the first heads step).

    ``"svd"``: the top right singular vector of the stacked
    ``sqrt(w_i) ||other_i|| own_i`` (own = the tasks' shared-side vectors, other =
    their head-side vectors), scaled to their weighted RMS norm, sign towards
    their weighted sum; ``"mean"``: their weighted mean (``"svd"`` when that is
    ~0); ``"random"``: N(0, 1) entries from ``torch.Generator().manual_seed(seed)``, same scale.
    """
    own, other = _shared_side(p)
    rms, total = _gauge_scale(p)
    if init == "mean":
        mean = total / p.w.sum()
        if float(mean.norm()) > 1e-9 * max(rms, 1e-300):
            return mean
        init = "svd"
    if init == "svd":
        M = p.w.sqrt()[:, None] * other.norm(dim=1)[:, None] * own
        if float(M.abs().max()) == 0:
            return torch.zeros_like(own[0])
        v = torch.linalg.svd(M, full_matrices=False)[2][0]
        return v * rms * (-1.0 if float(v @ total) < 0 else 1.0)
    if init == "random":
        gen = torch.Generator().manual_seed(int(seed))
        v = torch.randn(own.shape[1], generator=gen, dtype=_F64).to(device=own.device, dtype=own.dtype)
        return v * rms / max(own.shape[1], 1) ** 0.5
    raise ValueError(f"init must be 'svd', 'mean' or 'random', got {init!r}")


def _fix_gauge(p: _Problem, shared: torch.Tensor, heads: torch.Tensor):
    """(b, d) and (c b, d / c) give the same update: scale the shared vector to the tasks' weighted RMS
    norm of that side, with sign towards their weighted sum; the heads take the inverse scale."""
    rms, total = _gauge_scale(p)
    norm = float(shared.norm())
    if norm == 0 or rms == 0:
        return shared, heads
    scale = rms / norm * (-1.0 if float(shared.double() @ total.double()) < 0 else 1.0)
    return shared * scale, heads / scale


@dataclass
class VeraModuleSolution:
    """Solution at one module. Side ``"d"``: ``shared`` lambda_d' ``(r,)``, ``heads`` lambda_b'_k ``(K, d_out)``;
    side ``"b"``: ``shared`` lambda_b' ``(d_out,)``, ``heads`` lambda_d'_k ``(K, r)``.

    ``loss`` (float64, by :func:`vera_objective`), ``floor`` (:func:`vera_floor`,
    a lower bound, generally not reached), ``energy`` = ``sum_i w_i ||dW_i||^2``.
    ``history``: ALS - the loss at the start and after every iteration; Adam -
    the loss before every step. ``steps``: ALS iterations or Adam steps.
    """

    side: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    energy: float
    history: list[float]
    steps: int
    seconds: float = 0.0

    @property
    def relative_loss(self) -> float:
        return _ratio(self.loss, self.energy)


def _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device):
    if side not in VERA_SIDES:
        raise ValueError(f"side must be one of {VERA_SIDES}, got {side!r}")
    _check_vectors(lambda_b, lambda_d, vera_A, vera_B, module)
    w, gidx = check_grouping(torch.as_tensor(weights, dtype=_F64).reshape(-1).cpu(), group_index, n_groups,
                             lambda_b.shape[0], module)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _make_problem(lambda_b, lambda_d, vera_A, vera_B, w, gidx, n_groups, side, device), w, gidx


def _finish(p, shared, heads, lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, steps, start):
    shared, heads = _fix_gauge(p, shared.to(_F64), heads.to(_F64))
    shared, heads = shared.cpu(), heads.cpu()
    cpu = [t.detach().cpu() for t in (lambda_b, lambda_d, vera_A, vera_B)]
    loss = vera_objective(shared, heads, *cpu, w, gidx, p.side)
    root = gram_root(cpu[2])
    floor, energy = _floor_and_energy(cpu[0].to(_F64), cpu[1].to(_F64), cpu[3].to(_F64), root, w, torch.as_tensor(gidx),
                                      p.n_groups)
    dtype = lambda_b.dtype if lambda_b.is_floating_point() else torch.float32
    return VeraModuleSolution(p.side, shared.to(dtype), heads.to(dtype), loss, floor, energy, history, steps,
                              time.perf_counter() - start)


def solve_vera_als(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    side: str = "d",
    module: str = "<module>",
    *,
    max_iters: int = 2000,
    tol: float = 1e-10,
    target_relative: float | None = None,
    init: str = "svd",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> VeraModuleSolution:
    """VeRA HydraOpt at one module by alternating least squares; on the vectors, float64.

    Inputs: ``lambda_b`` ``(N, d_out)``, ``lambda_d`` ``(N, r)``, projections
    ``vera_A`` ``(r, d_in)``, ``vera_B`` ``(d_out, r)``, weights w_i > 0 and
    ``group_index[i]`` in ``0..n_groups-1``. The loss is quadratic in each
    side given the other, so each half-step is an exact least-squares solve:

    * side ``"d"``: given lambda_d' = u, every head's lambda_b'_k has a closed
      form per output row; given the heads, u solves an ``r x r`` system
      ``(G o B^T diag(s) B) u = c`` (pseudo-inverse when singular);
    * side ``"b"``: given lambda_b' = v, each lambda_d'_k solves an ``r x r``
      system (one matrix for all heads); given the heads, v has a closed form
      per output row.

    The loss never increases. Start: the shared vector from ``init`` -
    ``"svd"`` (top right singular vector of the stacked ``sqrt(w_i)
    ||other_i|| own_i``, own = the tasks' shared-side vectors), ``"mean"``
    (their weighted mean) or ``"random"`` (seeded by ``seed``) - then a heads step.
    Stops after ``max_iters`` iterations, when an iteration lowers
    the loss by less than ``tol`` (relative), or when ``loss / energy <=
    target_relative`` (or ``<= 1e-13``: exact). Cost per iteration
    ``O(d_out r^2 + N d_out r + r^3)`` after an ``O(N d_out r^2)`` set-up.
    ``device``: ``None`` = CUDA when available. Returns vectors on the CPU in
    the input dtype. Gauge: ``(c b, d / c)`` gives the same update as ``(b, d)``,
    so the shared vector is scaled to the weighted RMS norm of the tasks'
    vectors on that side, with sign towards their weighted sum, and the heads
    take the inverse scale (one adapter is then returned as it was).
    """
    start = time.perf_counter()
    p, w, gidx = _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device)
    energy = max(p.energy, 1e-300)
    stop_at = max(float(target_relative or 0.0), 1e-13) * energy
    shared = _init_shared(p, init, seed)
    heads = _heads_step(p, shared)
    loss = float(_expanded_loss(p, shared, heads))
    history = [loss]
    it = 0
    for it in range(1, max_iters + 1):
        if loss <= stop_at:
            it -= 1
            break
        shared = _shared_step(p, heads)
        heads = _heads_step(p, shared)
        new = float(_expanded_loss(p, shared, heads))
        history.append(new)
        if loss - new < tol * max(loss, 1e-300):
            loss = min(loss, new)
            break
        loss = new
    return _finish(p, shared, heads, lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, it, start)


def solve_vera_adam(
    lambda_b: torch.Tensor,
    lambda_d: torch.Tensor,
    vera_A: torch.Tensor,
    vera_B: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    group_index: Sequence[int],
    n_groups: int,
    side: str = "d",
    module: str = "<module>",
    *,
    max_steps: int = 4000,
    lr: float = 0.02,
    tol: float = 1e-7,
    check_every: int = 25,
    lr_decay: float = 0.3,
    max_decays: int = 6,
    target_relative: float | None = None,
    init: str = "svd",
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> VeraModuleSolution:
    """VeRA HydraOpt at one module by Adam on the shared vector and the heads; on the vectors.

    Same inputs and objective as :func:`solve_vera_als`. The loss is the Gram
    expansion ``sum_i w_i (||dW'_g||^2 - 2 <dW'_g, dW_i>) + energy`` (cost
    ``O(d_out r^2 + N d_out r)`` per step, no dense dW), divided by the energy
    for conditioning; ``history`` records the unnormalised loss before every step.

    * Start: the same point as ALS after its first heads step (``init``, then
      the closed-form heads), so the two solvers are comparable.
    * ``torch.optim.Adam`` with step sizes ``lr * rms`` of each initial tensor;
      every ``check_every`` steps, if the best loss improved by less than
      ``tol`` (relative) the step sizes are multiplied by ``lr_decay`` (at most
      ``max_decays`` times, then it stops); stops at ``max_steps`` or once
      ``loss / energy <= target_relative``. Returns the best parameters seen at a check.
    * ``device``: ``None`` = CUDA when available; ``dtype`` of the iterations
      (float32); the reported loss is re-evaluated in float64.
    """
    start = time.perf_counter()
    p64, w, gidx = _prepare(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, device)
    shared0 = _init_shared(p64, init, seed)
    heads0 = _heads_step(p64, shared0)
    p = p64.to(dtype)
    energy = max(p.energy, 1e-300)
    shared = torch.nn.Parameter(shared0.to(dtype).clone())
    heads = torch.nn.Parameter(heads0.to(dtype).clone())
    rms_s = float(shared0.pow(2).mean().sqrt()) or 1.0
    rms_h = float(heads0.pow(2).mean().sqrt()) or rms_s
    optim = torch.optim.Adam([{"params": [shared], "lr": lr * rms_s}, {"params": [heads], "lr": lr * rms_h}])
    with torch.no_grad():
        best = float(_expanded_loss(p, shared, heads))
    best_params = (shared.detach().clone(), heads.detach().clone())
    target = float(target_relative) * energy if target_relative is not None else -math.inf
    previous_best, decays, step = best, 0, 0
    losses: list[torch.Tensor] = []
    for step in range(1, max_steps + 1):
        if best <= target:
            step -= 1
            break
        optim.zero_grad(set_to_none=True)
        loss = _expanded_loss(p, shared, heads)
        (loss / energy).backward()
        losses.append(loss.detach())
        optim.step()
        if step % check_every and step != max_steps:
            continue
        with torch.no_grad():
            current = float(_expanded_loss(p, shared, heads))
        if current < best:
            best = current
            best_params = (shared.detach().clone(), heads.detach().clone())
        improvement = (previous_best - best) / max(abs(previous_best), 1e-300)
        previous_best = best
        if best <= target:
            break
        if improvement < tol:
            if decays >= max_decays:
                break
            decays += 1
            for group in optim.param_groups:
                group["lr"] *= lr_decay
    history = torch.stack(losses).double().cpu().tolist() if losses else []
    return _finish(p64, best_params[0], best_params[1], lambda_b, lambda_d, vera_A, vera_B, w, gidx, history, step, start)


@dataclass(frozen=True)
class VeraSolver:
    """A registered VeRA HydraOpt solver: ``fn(lambda_b, lambda_d, vera_A, vera_B, weights, group_index, n_groups, side, module, **options)``."""

    name: str
    fn: Callable[..., VeraModuleSolution]
    reference: str
    description: str


VERA_SOLVERS: dict[str, VeraSolver] = {
    "als": VeraSolver(
        "als", solve_vera_als,
        "alternating least squares (block coordinate descent) on the bilinear VeRA update; "
        "Kopiczko et al. (2024), VeRA, arXiv:2310.11454",
        "exact least-squares half-steps: per-row closed form for lambda_b, an r x r system for lambda_d",
    ),
    "adam": VeraSolver(
        "adam", solve_vera_adam,
        "Ceritli et al. (2025), HydraOpt, arXiv:2507.17706; Kingma & Ba (2015), Adam, arXiv:1412.6980",
        "the paper's iterative optimisation, on the VeRA vectors, factored loss",
    ),
}
