"""Task weights w_i of the HydraOpt objective, per module: uniform, inverse squared norm, or explicit."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ...errors import AdapterError

__all__ = ["WEIGHTINGS", "task_weights"]


def _uniform(norms_sq: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(norms_sq)


def _inverse_norm(norms_sq: torch.Tensor) -> torch.Tensor:
    return 1.0 / norms_sq


WEIGHTINGS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "uniform": (_uniform, "w_i = 1"),
    "norm": (_inverse_norm, "w_i = 1 / ||dW_i||_F^2 (per module; large updates do not dominate)"),
}


def task_weights(
    weighting: str | Mapping[str, float] | Sequence[float],
    tasks: Sequence[str],
    norms_sq: torch.Tensor,
    module: str = "<module>",
) -> torch.Tensor:
    """Weights w_i ``(N,)`` float64 for one module.

    ``weighting`` is a name in :data:`WEIGHTINGS` (``"uniform"``, ``"norm"``),
    a mapping task -> weight, or a sequence in task order. ``norms_sq`` are the
    ``||dW_i||_F^2`` (factored, :func:`~hydralib.merge.lowrank.delta_norms_sq`).
    """
    if isinstance(weighting, str):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose from {sorted(WEIGHTINGS)}, a mapping or a sequence")
        if weighting == "norm" and not (norms_sq > 0).all():
            zero = [t for t, v in zip(tasks, norms_sq.tolist()) if v <= 0]
            raise AdapterError(f"module {module}: weighting='norm' needs non-zero deltas; zero for tasks {zero}")
        w = WEIGHTINGS[weighting][0](norms_sq.double())
    elif isinstance(weighting, Mapping):
        missing = [t for t in tasks if t not in weighting]
        if missing:
            raise ValueError(f"weighting: no weight for tasks {missing}")
        w = torch.as_tensor([float(weighting[t]) for t in tasks], dtype=torch.float64)
    else:
        w = torch.as_tensor([float(x) for x in weighting], dtype=torch.float64)
        if w.shape != (len(tasks),):
            raise ValueError(f"weighting: {w.numel()} weights for {len(tasks)} tasks")
    return w.cpu()
