"""TIES in dW space with memory bounded by a few ``d_out x d_in`` matrices, whatever the number of tasks.

peft's :func:`~peft.utils.merge_utils.ties` (what :func:`~.baselines.merge_adapters`
calls) stacks the N dense deltas of a module: ``N d_out d_in`` floats, 9.4 GB
for 40 tasks on a Llama-3.1-8B MLP projection. :func:`ties_streamed` makes the
same merge in two passes over the tasks, forming one task's
``dW_i = s_i B_i A_i`` ``(d_out, d_in)`` at a time from its factors:

1. trim: ``t_i``, the ``k``-th largest ``|dW_i|`` (``k = int(density d_out d_in)``,
   as peft's magnitude pruning keeps), and the elected sign
   ``sign(sum_i trim(dW_i))`` (peft's ``"total"`` method);
2. disjoint mean: ``sum_i w_i trim(dW_i) [sign agrees] / max(1, #agreeing)``.

Memory: the running sum, the count and one task's delta and mask (about five
``d_out x d_in`` float32 matrices per module in flight). Equal to peft's result up to the order
of the float sums and to ties in magnitude at the threshold (peft's ``topk``
breaks them by index; here every entry equal to ``t_i`` is kept). Then, as
every dW baseline, the merged dW is stored as a rank-r LoRA by truncated SVD.
Modules run one at a time, each with all intra-op threads.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..threads import map_modules
from .baselines import MergedLoRA
from .lowrank import check_factors, truncated_svd_dense

__all__ = ["ties_module", "ties_streamed"]


def _trim_threshold(delta: torch.Tensor, density: float) -> float:
    """The ``k``-th largest ``|delta|`` with ``k = int(density * numel)`` (inf when k = 0: nothing kept)."""
    n = delta.numel()
    k = int(density * n)
    if k <= 0:
        return float("inf")
    return float(delta.abs().reshape(-1).kthvalue(n - k + 1).values)


def ties_module(factors: Sequence[tuple[torch.Tensor, torch.Tensor, float]], weights: Sequence[float],
                density: float, lam: float = 1.0) -> torch.Tensor:
    """TIES-merged dW ``(d_out, d_in)`` of one module from its N factor triples ``(A (r, d_in), B (d_out, r), s)``,
    one dense delta at a time (works on dW, formed from the factors)."""
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    thresholds, total = [], None
    for A, B, s in factors:  # pass 1: trim thresholds and the elected sign
        delta = s * (B @ A)
        t = _trim_threshold(delta, density)
        thresholds.append(t)
        trimmed = torch.where(delta.abs() >= t, delta, torch.zeros((), dtype=delta.dtype))
        total = trimmed if total is None else total.add_(trimmed)
        del delta
    sign = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
    del total
    merged, count = None, None
    for (A, B, s), w, t in zip(factors, weights, thresholds):  # pass 2: disjoint mean of the agreeing entries
        delta = s * (B @ A)
        keep = (delta.abs() >= t) & (delta.sign() == sign)
        part = torch.where(keep, delta * float(w), torch.zeros((), dtype=delta.dtype))
        merged = part if merged is None else merged.add_(part)
        count = keep.to(delta.dtype) if count is None else count.add_(keep.to(delta.dtype))
        del delta, keep, part
    return float(lam) * (merged / count.clamp_(min=1.0))


def ties_streamed(aset, density: float, *, lam: float = 1.0, rank: int | None = None,
                  weights: Sequence[float] | None = None, modules: Sequence[str] | None = None,
                  progress: bool = False) -> MergedLoRA:
    """TIES over the modules of ``aset`` (lazy or eager), stored as a rank-``rank`` LoRA (default: the task rank).

    Reads one module's factors at a time (a :class:`~hydralib.lazy.LazyAdapterSet` keeps the rest on disk).
    """
    from tqdm.auto import tqdm

    modules = list(modules) if modules is not None else list(aset.modules)
    w = [1.0] * len(aset.tasks) if weights is None else [float(x) for x in weights]

    def merge_module(module: str):
        triples = [aset.factors(t, module) for t in aset.tasks]
        check_factors([a for a, _, _ in triples], [b for _, b, _ in triples], [s for _, _, s in triples], module,
                      aset.tasks)
        r_m = int(rank) if rank is not None else max(int(a.shape[0]) for a, _, _ in triples)
        svd = truncated_svd_dense(ties_module(triples, w, density, lam), r_m, module)
        return svd.lora_a, svd.lora_b, svd.tail_energy

    out, tails = {}, {}
    with tqdm(total=len(modules), desc="ties (streamed)", disable=not progress, leave=False) as bar:
        for module, (a, b, tail) in map_modules(merge_module, modules, parallel=False, progress=bar.update):
            out[module], tails[module] = (a, b), tail
    params = {"lam": float(lam), "weights": w, "density": float(density), "majority_sign_method": "total",
              "streamed": True}
    ranks = {a.shape[0] for a, _ in out.values()}
    return MergedLoRA("ties", params, ranks.pop() if len(ranks) == 1 else -1, out, tails, list(aset.tasks),
                      aset.base_model, aset.fan_in_fan_out)
