"""The float64 products of the factored solvers: public ``torch.matmul`` in float64, on the tensors' device.

The exact HydraOpt solver (:func:`~hydralib.merge.hydraopt.solve_exact`)
does its heavy products in the factors' dtype with plain ``@`` (the skinny
Krylov steps with the stacked lora_A ``(N r, d_in)`` in
:func:`~hydralib.merge.lowrank.factored_top_eigen`, the heads ``(N, d_out,
r) @ (N, r, r')``), and reports everything it computes (energies, the loss,
Ritz values) from float64 products: batched Grams ``(N, r, d) -> (N, r, r)``
(:func:`gram64`) and ``(N r, d_in) @ (d_in, r')`` (:func:`matmul64`). Every
product is torch's own, whatever the CPU: no routing by CPU vendor, no
private torch op. (An earlier version sent them to numpy's BLAS, torch's
or oneDNN by CPU vendor; at the ``llama-3.2-1b`` benchmark preset that bought
no speed for ``hydralib merge``, see the commit that removed it.)

Example
-------
>>> import torch
>>> a = torch.randn(3, 5, 64, dtype=torch.float32)
>>> g = gram64(a)                              # (3, 5, 5) float64 Grams a_i a_i^T
>>> bool(torch.allclose(g, a.double() @ a.double().mT))
True
"""

from __future__ import annotations

import torch

__all__ = ["to_float64", "matmul64", "gram64"]


def to_float64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 (``x`` itself when it already is; detached); a fresh copy otherwise."""
    x = x.detach()
    return x if x.dtype == torch.float64 else x.to(torch.float64)


def matmul64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float64 (batched like ``torch.matmul``; no autograd); pass float64 inputs to avoid conversions."""
    return torch.matmul(to_float64(a), to_float64(b))


def gram64(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Batched float64 Grams of ``x`` ``(N, a, b)``: ``x_i x_i^T`` ``(N, a, a)``, or ``x_i^T x_i`` ``(N, b, b)`` with ``transpose``.

    The products of ``matmul64(x, x.mT)`` (``matmul64(x.mT, x)``); ``x`` is
    converted to float64 once.
    """
    x64 = to_float64(x)
    return torch.matmul(x64.mT, x64) if transpose else torch.matmul(x64, x64.mT)
