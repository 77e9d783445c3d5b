"""How far averaging the VeRA vectors is from averaging the updates: the vector-average gap (on the vectors)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .algebra import _F64, _ratio, gram_root, masked_norms_sq
from .sets import _as_vera_set, _module_vectors, _select_modules, _task_weight_list

__all__ = ["VectorAverageGap", "vector_average_gap"]


@dataclass
class VectorAverageGap:
    """How far the update of the averaged vectors is from the average update.

    Per module: ``error[m] = ||dW(b_bar, d_bar) - mean_i dW_i||_F`` and
    ``reference[m] = ||mean_i dW_i||_F`` (weighted means); ``relative[m]`` is
    their ratio (0 when both are 0, ``inf`` when only the mean update is 0).
    ``total`` is ``sqrt(sum_m error^2 / sum_m reference^2)``.
    """

    relative: dict[str, float]
    error: dict[str, float]
    reference: dict[str, float]
    weights: list[float]

    @property
    def total(self) -> float:
        num = sum(e * e for e in self.error.values())
        den = sum(r * r for r in self.reference.values())
        return _ratio(math.sqrt(num), math.sqrt(den))



def vector_average_gap(
    adapters,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    modules: Sequence[str] | None = None,
) -> VectorAverageGap:
    """Relative Frobenius error of averaging the VeRA vectors instead of the updates, per module.

    With normalised weights ``p_i = w_i / sum_j w_j`` (default uniform),
    ``b_bar = sum_i p_i b_i``, ``d_bar = sum_i p_i d_i``:
    ``error = ||(B o (b_bar d_bar^T - sum_i p_i b_i d_i^T)) A||_F``, which is
    ``||(B o C) A||_F`` for the weighted cross-covariance
    ``C = sum_i p_i (b_i - b_bar)(d_i - d_bar)^T``. On the vectors (factored,
    no dense dW). Zero when all lambda_b or all lambda_d are equal.
    """
    aset = _as_vera_set(adapters, "vector_average_gap")
    modules = _select_modules(aset, modules)
    w = _task_weight_list(weights, aset.tasks)
    total = sum(w)
    if total == 0:
        raise ValueError("vector_average_gap: the weights sum to 0")
    p = torch.as_tensor([x / total for x in w], dtype=_F64)
    relative, error, reference = {}, {}, {}
    for module in modules:
        LB, LD, vA, vB = _module_vectors(aset, module)
        root = gram_root(vA)
        mean_outer = (p[:, None, None] * LB[:, :, None] * LD[:, None, :]).sum(0)
        b_bar, d_bar = p @ LB, p @ LD
        err = float(masked_norms_sq(b_bar[:, None] * d_bar[None, :] - mean_outer, vB, root).sqrt())
        ref = float(masked_norms_sq(mean_outer, vB, root).sqrt())
        error[module], reference[module], relative[module] = err, ref, _ratio(err, ref)
    return VectorAverageGap(relative, error, reference, w)
