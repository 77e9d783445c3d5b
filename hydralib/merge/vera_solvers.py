"""Per-module VeRA HydraOpt: the old import path of :mod:`hydralib.merge.vera.algebra` and :mod:`hydralib.merge.vera.solvers`.

The factored algebra, the objective and its floor live in
:mod:`hydralib.merge.vera.algebra`, the ALS and Adam solvers in
:mod:`hydralib.merge.vera.solvers`; every name is importable from here as before.
"""

from .vera.algebra import VERA_SIDES, gram_root, masked_norms_sq, vera_delta, vera_floor, vera_objective
from .vera.solvers import VERA_SOLVERS, VeraModuleSolution, VeraSolver, solve_vera_adam, solve_vera_als

__all__ = [
    "VERA_SIDES",
    "gram_root",
    "masked_norms_sq",
    "vera_delta",
    "vera_objective",
    "vera_floor",
    "VeraModuleSolution",
    "solve_vera_als",
    "solve_vera_adam",
    "VeraSolver",
    "VERA_SOLVERS",
]
