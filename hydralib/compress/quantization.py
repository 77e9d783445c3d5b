"""Quantization of every adapter's stored factors, and the reconstruction error of any compressed set.

``quantize(aset, "int4")`` stores each adapter's lora_a and lora_b (scaling folded
into lora_b) with an integer codec of :mod:`.codecs`: one fp16 absmax scale per
rank component (a row of lora_a, a column of lora_b), or per group of ``G``
numbers along it (``"int4:g64"``). Works on the factors; the update the model
sees is ``dequant(B) @ dequant(A)``.

:func:`relative_loss` measures any compressed set against the original adapters
on the updates, ``sum_i ||dW'_i - dW_i||^2 / sum_i ||dW_i||^2``, through ``r x r``
Gram matrices (no ``d_out x d_in`` matrix).
"""

from __future__ import annotations

import torch


def quantize(aset, codec: str = "int4", tasks=None):
    """Every adapter of ``aset`` with its factors stored under ``codec`` (a per_task
    :class:`~.container.CompressedAdapters`). ``codec``: ``"int<b>"``, ``"int<b>:g<G>"``, ``"compeft:<d>"``, ``"fp16"``."""
    from .container import CompressedAdapters, stack_per_task

    tasks = list(tasks or aset.tasks)
    factors, shapes = stack_per_task(aset, tasks, aset.factors)
    return CompressedAdapters.build(codec, "per_task", tasks, tasks, {t: t for t in tasks}, factors,
                                    {"lora_A": codec, "lora_B": codec}, shapes, base_model=aset.base_model)


def _inner(A1, B1, A2, B2) -> float:
    """``<B1 A1, B2 A2>_F`` on the factors, in float64."""
    return float(((B1.double().T @ B2.double()) * (A1.double() @ A2.double().T)).sum())


def update_energy(aset, tasks=None) -> float:
    """``sum_i ||dW_i||^2`` over tasks and modules (float64, on the factors)."""
    total = 0.0
    for t in tasks or aset.tasks:
        for m in aset.modules:
            A, B, s = aset.factors(t, m)
            total += s * s * _inner(A, B, A, B)
    return total


def relative_loss(cset, aset, tasks=None) -> float:
    """``sum ||dW'_t - dW_t||^2 / sum ||dW_t||^2`` of a compressed set ``cset`` against ``aset`` (on the factors);
    NaN when every update is zero (nothing to lose)."""
    num = den = 0.0
    for t in tasks or cset.tasks:
        for m in aset.modules:
            A, B, s = aset.factors(t, m)
            a, b, _ = cset.task_factors(t, m)
            own, new = s * s * _inner(A, B, A, B), _inner(a, b, a, b)
            num += own + new - 2 * s * _inner(A, B, a, b)
            den += own
    return max(num, 0.0) / den if den > 0 else float("nan")
