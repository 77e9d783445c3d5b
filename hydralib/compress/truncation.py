"""Rank truncation: each adapter cut to rank r'' by the SVD of its own update, computed on the factors.

For one module, ``dW = s B A`` with A ``(r, d_in)``, B ``(d_out, r)``. The
rank-r'' truncated SVD of dW (Eckart-Young: the best rank-r'' approximation in
Frobenius norm) comes from :func:`hydralib.merge.lowrank.lowrank_svd` on the one
adapter: an ``r x r`` eigenproblem, never a ``d_out x d_in`` matrix. The kept
factors are ``lora_a`` ``(r'', d_in)`` with orthonormal rows and ``lora_b``
``(d_out, r'')`` = left singular vectors times singular values (scaling 1).
The squared error is the sum of the dropped squared singular values.

Example
-------
>>> A, B = torch.randn(4, 10), torch.randn(6, 4)
>>> a, b, err = truncate_factors(A, B, 0.5, rank=4)
>>> bool(torch.allclose(b @ a, 0.5 * B @ A, atol=1e-4)), err < 1e-6
(True, True)
"""

from __future__ import annotations

import torch


def truncate_factors(A: torch.Tensor, B: torch.Tensor, scaling: float, rank: int,
                     module: str = "<module>") -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(lora_a (rank, d_in), lora_b (d_out, rank), squared error)`` of the rank-``rank`` SVD of ``scaling * B @ A``.

    Works on the factors. Rows beyond the adapter's own rank are zero (truncating to at least the rank
    returns the adapter's update exactly).
    """
    from ..merge.lowrank import lowrank_svd

    svd = lowrank_svd([A.float()], [B.float()], [float(scaling)], int(rank), module=module)
    return svd.lora_a, svd.lora_b, float(svd.tail_energy)


def truncate(aset, rank: int, codec: str = "fp16", tasks=None):
    """Every adapter of ``aset`` truncated to ``rank`` (per module), stored with ``codec`` (``"fp16"``, ``"int4"``...).

    Returns a per_task :class:`~.container.CompressedAdapters` whose ``info`` holds the relative loss
    ``sum ||dW - dW''||^2 / sum ||dW||^2`` of the truncation (before the codec).
    """
    from .container import CompressedAdapters
    from .quantization import update_energy

    tasks = list(tasks or aset.tasks)
    factors, shapes, err = {}, {}, 0.0
    for module in aset.modules:
        d_out, d_in = aset.shape(module)
        As, Bs = torch.zeros(len(tasks), rank, d_in), torch.zeros(len(tasks), d_out, rank)
        for i, t in enumerate(tasks):
            a, b, e = truncate_factors(*aset.factors(t, module), rank=rank, module=module)
            As[i], Bs[i], err = a, b, err + e
        factors[module], shapes[module] = {"lora_A": As, "lora_B": Bs}, (d_out, d_in)
    energy = update_energy(aset, tasks)
    codecs = {"lora_A": codec, "lora_B": codec}
    name = f"truncate-r{rank}" + ("" if codec == "fp16" else f"+{codec}")
    return CompressedAdapters.build(name, "per_task", tasks, tasks, {t: t for t in tasks}, factors, codecs, shapes,
                                    base_model=aset.base_model,
                                    info={"rank": rank, "truncation_relative_loss": err / energy if energy > 0 else float("nan")})
