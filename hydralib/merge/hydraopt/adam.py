"""The iterative HydraOpt solver at one module (side-A orientation): Adam on A' and the heads, factored loss."""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch

from .exact import solve_exact
from .problem import ModuleSolution, _batched_objective, _check_problem, _pad, _padded, objective

__all__ = ["solve_adam"]


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
