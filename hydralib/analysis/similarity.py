"""Task x task similarity of LoRA adapters at one module, all in factored form.

For N tasks at one module (A_i ``(r, d_in)``, B_i ``(d_out, r)``, s_i), every
function returns an ``(N, N)`` matrix (numpy, float64). Suffix ``_a`` means the
A side (input directions, R^d_in), ``_b`` the B side (output directions,
R^d_out). Everything is built from the r x r Gram blocks ``A_i A_j^T`` and
``B_i^T B_j`` (:meth:`FactorStack.gram`): no ``d_out x d_in`` matrix is formed.

Measures (kind names as used by :func:`module_similarity`):

``cosine_a``, ``cosine_b``
    Cosine of the flattened factors, ``<A_i, A_j>_F / (||A_i|| ||A_j||)``. Acts on
    the factors. NOT invariant to the reparametrisation ``A -> G A,
    B -> B G^{-1}`` (same dW), not even to a permutation of the r latent
    directions. It therefore measures similarity *of the parameters*; two
    adapters trained from the same initial A (PEFT draws lora_A from the
    global torch seed) can have a high ``cosine_a`` simply because A barely
    moved from that shared start. Ranks must be equal.
``cosine_delta``
    Cosine of the updates ``<dW_i, dW_j>_F / (||dW_i|| ||dW_j||)`` with
    ``<dW_i, dW_j>_F = s_i s_j tr((B_i^T B_j)(A_j A_i^T))``. Acts on dW; invariant.
``overlap_a``, ``overlap_b``
    Subspace overlap ``||P_i P_j||_F^2 / min(k_i, k_j)`` of the row spaces of
    A_i, A_j (``_a``) or column spaces of B_i, B_j (``_b``), P the orthogonal
    projector, k the (numerical) rank. Equals the mean squared cosine of the
    principal angles: 1 for the same subspace, 0 for orthogonal ones, and
    ``max(k_i, k_j) / d`` in expectation for independent uniformly random
    subspaces (``chance_overlap_*``). Invariant to any invertible ``G`` since
    it depends only on the subspaces; blind to how strongly each direction
    is used (a direction with a tiny singular value counts as much as the
    dominant one).
``angles_a``, ``angles_b``
    Principal angles (radians, ascending) ``(N, N, r)``; NaN beyond ``min(k_i, k_j)``.
``cka_a``, ``cka_b``
    Linear (uncentred) CKA of the updates, also called the RV coefficient:
    ``cka_a = <K_i, K_j>_F / (||K_i||_F ||K_j||_F)`` with ``K_i = dW_i^T dW_i``
    ``(d_in, d_in)``, i.e. ``||dW_i dW_j^T||_F^2 / (||dW_i dW_i^T||_F ||dW_j dW_j^T||_F)``;
    ``cka_b`` the same with ``K_i = dW_i dW_i^T`` (output side). It is the CKA
    of the representations ``x -> dW_i x`` under isotropic probe inputs.
    What it adds over the overlap: it is a *weighted* overlap of the same
    subspaces (row space of dW_i = row space of A_i when B_i has full rank),
    each direction weighted by its squared singular value in dW, so weak,
    noisy directions matter little; and, unlike the factor cosine, it depends
    on dW only, hence is invariant to ``A -> G A, B -> B G^{-1}`` and to the
    scalings. Chance level under a uniformly random rotation of one adapter:
    ``tr(K_i) tr(K_j) / (d ||K_i||_F ||K_j||_F)`` (``chance_cka_*``), which is
    ``r / d`` for flat spectra and larger for peaked ones.

Compare A with B only against chance: for SmolLM2's k/v projections
``d_out = 192`` and ``d_in = 576``, so random B subspaces overlap three times
more than random A subspaces. :func:`chance_corrected` rescales a measure to
``(sim - chance) / (1 - chance)`` (0 = chance, 1 = identical).

Worked example
--------------
>>> import torch
>>> from hydralib.analysis.core import FactorStack
>>> from hydralib.analysis.similarity import module_similarity
>>> g = torch.Generator().manual_seed(0)
>>> A, B = torch.randn(4, 50, generator=g), torch.randn(30, 4, generator=g)
>>> G = torch.randn(4, 4, generator=g) + 4 * torch.eye(4)   # invertible reparametrisation
>>> st = FactorStack([A, G @ A], [B, B @ torch.linalg.inv(G)], [1.0, 1.0])
>>> sims = module_similarity(st, kinds=["cosine_a", "overlap_a", "cosine_delta", "cka_b"])
>>> [round(float(sims[k][0, 1]), 6) for k in ("overlap_a", "cosine_delta", "cka_b")]  # same dW
[1.0, 1.0, 1.0]
>>> float(sims["cosine_a"][0, 1]) < 0.999  # the factors themselves differ
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg
import torch

from .core import (
    FactorStack,
    _side,
    aggregate,
    as_adapter_set,
    iter_stacks,
    offdiagonal_mean,
    to_jsonable,
    torch_threads,
)

MAIN_KINDS = ("cosine_a", "cosine_b", "cosine_delta", "overlap_a", "overlap_b", "cka_a", "cka_b")
CHANCE_KINDS = ("chance_overlap_a", "chance_overlap_b", "chance_cka_a", "chance_cka_b")
ANGLE_KINDS = ("angles_a", "angles_b")
ALL_KINDS = MAIN_KINDS + CHANCE_KINDS + ANGLE_KINDS
DEFAULT_KINDS = MAIN_KINDS + CHANCE_KINDS


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(float)


def _block_diagonal(gram: torch.Tensor) -> torch.Tensor:
    """Diagonal blocks ``(N, r, r)`` of Gram blocks ``(N, N, r, r)``."""
    return torch.diagonal(gram, dim1=0, dim2=1).permute(2, 0, 1)


def _normalise_inner(inner: torch.Tensor) -> np.ndarray:
    """``inner[i, j] / sqrt(inner[i, i] inner[j, j])``; NaN where a diagonal entry is 0."""
    d = torch.diagonal(inner).clamp_min(0).sqrt()
    denom = d[:, None] * d[None, :]
    out = torch.where(denom > 0, inner / torch.where(denom > 0, denom, torch.ones_like(denom)),
                      torch.full_like(inner, float("nan")))
    return _np(out)


# --------------------------------------------------------------------------- plain vectors


def cosine_matrix(x) -> np.ndarray:
    """Cosine similarity ``(N, N)`` of the rows of ``x`` ``(N, p)`` (each row one flattened tensor); NaN for zero rows."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"hydralib.analysis.similarity: cosine_matrix expects (N, p), got {tuple(x.shape)}")
    return _normalise_inner(x @ x.T)


# --------------------------------------------------------------------------- factors


def factor_inner(stack: FactorStack, side: str) -> torch.Tensor:
    """Frobenius inner products of the factors ``(N, N)``: ``<A_i, A_j>_F`` (``"a"``) or ``<B_i, B_j>_F`` (``"b"``), from Gram traces."""
    return torch.diagonal(stack.gram(side), dim1=2, dim2=3).sum(-1)


def factor_cosine(stack: FactorStack, side: str) -> np.ndarray:
    """Cosine of flattened A_i (``"a"``) or B_i (``"b"``), ``(N, N)``. Acts on factors; not reparametrisation invariant.

    Raises ValueError if the tasks' ranks differ (flattened factors of different
    shapes cannot be compared entry by entry).
    """
    if not stack.equal_ranks:
        raise ValueError(
            f"hydralib.analysis.similarity: module {stack.module!r}: cosine of flattened factors needs equal ranks, "
            f"got {sorted(set(stack.ranks))}; use overlap_* or cka_* instead"
        )
    return _normalise_inner(factor_inner(stack, side))


# --------------------------------------------------------------------------- updates


def delta_inner(stack: FactorStack) -> torch.Tensor:
    """``<dW_i, dW_j>_F = s_i s_j tr((B_i^T B_j)(A_j A_i^T))`` ``(N, N)``, in factored form (acts on dW)."""
    ga, gb = stack.gram("a"), stack.gram("b")
    s = stack.scaling
    return (gb * ga).sum(dim=(-1, -2)) * s[:, None] * s[None, :]


def delta_cosine(stack: FactorStack) -> np.ndarray:
    """Cosine of the updates dW_i ``(N, N)``, in factored form (acts on dW; invariant to reparametrisation)."""
    return _normalise_inner(delta_inner(stack))


def delta_norms(stack: FactorStack) -> np.ndarray:
    """``||dW_i||_F`` ``(N,)`` in factored form."""
    return np.sqrt(np.clip(np.diagonal(_np(delta_inner(stack))), 0, None))


def _cka_numerators(stack: FactorStack, side: str) -> torch.Tensor:
    """``||dW_i dW_j^T||_F^2`` (``"a"``) or ``||dW_i^T dW_j||_F^2`` (``"b"``), ``(N, N)``, scalings dropped."""
    side = _side(side)
    ga, gb = stack.gram("a"), stack.gram("b")
    if side == "a":  # tr(GA_ij^T GB_ii GA_ij GB_jj)
        outer, inner = gb, ga
    else:  # tr(GB_ij^T GA_ii GB_ij GA_jj)
        outer, inner = ga, gb
    d = _block_diagonal(outer)
    t = d[:, None] @ inner @ d[None, :]
    return (t * inner).sum(dim=(-1, -2))


def delta_cka(stack: FactorStack, side: str) -> np.ndarray:
    """Uncentred linear CKA of the updates on the input side (``"a"``: ``K_i = dW_i^T dW_i``)
    or output side (``"b"``: ``K_i = dW_i dW_i^T``), ``(N, N)``. Acts on dW; invariant
    to ``A -> G A, B -> B G^{-1}`` and to scalings."""
    return _normalise_inner(_cka_numerators(stack, side))


def chance_cka(stack: FactorStack, side: str) -> np.ndarray:
    """Expected :func:`delta_cka` if one adapter's ``side`` were rotated uniformly at random:
    ``tr(K_i) tr(K_j) / (d ||K_i||_F ||K_j||_F)`` ``(N, N)``."""
    side = _side(side)
    num = torch.diagonal(_cka_numerators(stack, side)).clamp_min(0).sqrt()  # ||K_i||_F (unscaled)
    ga, gb = stack.gram("a"), stack.gram("b")
    tr = (_block_diagonal(ga) * _block_diagonal(gb)).sum(dim=(-1, -2))  # ||B_i A_i||_F^2 = tr(K_i) (unscaled)
    ratio = torch.where(num > 0, tr / torch.where(num > 0, num, torch.ones_like(num)), torch.full_like(num, float("nan")))
    return _np(ratio[:, None] * ratio[None, :] / stack.dim(side))


# --------------------------------------------------------------------------- subspaces


def _basis_products(stack: FactorStack, side: str, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks ``Q_i Q_j^T = W_i^T (X_i X_j^T) W_j`` ``(N, N, r, r)`` of orthonormal bases, and ``min(k_i, k_j)``."""
    w, k = stack.whitening(side, rtol)
    prod = w.transpose(1, 2)[:, None] @ stack.gram(side) @ w[None, :]
    k = torch.tensor(k, device=w.device)
    return prod, torch.minimum(k[:, None], k[None, :])


def subspace_overlap(stack: FactorStack, side: str, rtol: float = 1e-6) -> np.ndarray:
    """Normalised overlap ``||P_i P_j||_F^2 / min(k_i, k_j)`` ``(N, N)`` of the row spaces of A
    (``"a"``) or column spaces of B (``"b"``) = mean squared cosine of the principal angles.

    ``k_i``: numerical rank of the factor (singular values above ``rtol`` times the
    largest); NaN where a factor is zero. Invariant to ``A -> G A``, ``B -> B G^{-1}``.
    """
    prod, kmin = _basis_products(stack, side, rtol)
    total = (prod**2).sum(dim=(-1, -2))
    kmin = kmin.to(total.dtype)
    out = torch.where(kmin > 0, total / kmin.clamp_min(1), torch.full_like(total, float("nan")))
    return _np(out)


def chance_overlap(stack: FactorStack, side: str, rtol: float = 1e-6) -> np.ndarray:
    """Expected :func:`subspace_overlap` for independent uniformly random subspaces of the same ranks:
    ``k_i k_j / (d min(k_i, k_j)) = max(k_i, k_j) / d`` ``(N, N)`` (``r / d`` for equal ranks)."""
    _, k = stack.whitening(side, rtol)
    k = np.asarray(k, dtype=float)
    kmax, kmin = np.maximum(k[:, None], k[None, :]), np.minimum(k[:, None], k[None, :])
    return np.where(kmin > 0, kmax / stack.dim(side), np.nan)


def principal_angles_matrix(stack: FactorStack, side: str, rtol: float = 1e-6) -> np.ndarray:
    """Principal angles (radians, ascending) between all pairs of subspaces, ``(N, N, r)``.

    From the singular values (cosines) of the ``r x r`` blocks ``Q_i Q_j^T`` of
    orthonormal bases; entries beyond ``min(k_i, k_j)`` are NaN. Angles below
    ~1e-7 rad are rounded by the arccos (use :func:`principal_angles` for one
    pair at full accuracy).
    """
    prod, kmin = _basis_products(stack, side, rtol)
    cos = torch.linalg.svdvals(prod).clamp(0.0, 1.0)
    angles = _np(torch.arccos(cos))
    idx = np.arange(angles.shape[-1])
    angles[idx[None, None, :] >= kmin.cpu().numpy()[:, :, None]] = np.nan
    return angles


def principal_angles(x, y, side: str = "a") -> np.ndarray:
    """Principal angles (radians, ascending) between two factors' subspaces, by ``scipy.linalg.subspace_angles``.

    ``side="a"``: row spaces of ``x = A_i`` ``(r_i, d_in)`` and ``y = A_j``;
    ``side="b"``: column spaces of ``x = B_i`` ``(d_out, r_i)`` and ``y = B_j``.
    Returns ``min(rank x, rank y)`` angles.
    """
    x = np.asarray(torch.as_tensor(x).detach().to(torch.float64).cpu())
    y = np.asarray(torch.as_tensor(y).detach().to(torch.float64).cpu())
    if _side(side) == "a":
        x, y = x.T, y.T
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"hydralib.analysis.similarity: principal_angles needs factors of the same ambient dimension, "
            f"got {x.shape} and {y.shape} (side {side!r})"
        )
    return np.sort(scipy.linalg.subspace_angles(x, y))


def chance_corrected(similarity, chance) -> np.ndarray:
    """``(sim - chance) / (1 - chance)``: 0 at the chance level, 1 for identical subspaces."""
    sim, chance = np.asarray(similarity, dtype=float), np.asarray(chance, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sim - chance) / (1.0 - chance)


# --------------------------------------------------------------------------- per module and per set


def module_similarity(
    stack: FactorStack,
    kinds: Iterable[str] | None = None,
    rtol: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Task x task matrices of one module: ``{kind: (N, N)}`` (``(N, N, r)`` for ``angles_*``).

    ``kinds``: any of :data:`ALL_KINDS` (default :data:`DEFAULT_KINDS`: the
    seven measures and their chance levels). ``cosine_a``/``cosine_b`` are
    skipped (NaN matrices) when ranks differ.
    """
    kinds = list(DEFAULT_KINDS if kinds is None else kinds)
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        raise ValueError(f"hydralib.analysis.similarity: unknown kinds {unknown}; choose from {list(ALL_KINDS)}")
    out: dict[str, np.ndarray] = {}
    n = stack.n_tasks
    for kind in kinds:
        side = kind[-1]
        if kind.startswith("cosine_") and kind != "cosine_delta":
            out[kind] = factor_cosine(stack, side) if stack.equal_ranks else np.full((n, n), np.nan)
        elif kind == "cosine_delta":
            out[kind] = delta_cosine(stack)
        elif kind.startswith("overlap_"):
            out[kind] = subspace_overlap(stack, side, rtol)
        elif kind.startswith("cka_"):
            out[kind] = delta_cka(stack, side)
        elif kind.startswith("chance_overlap_"):
            out[kind] = chance_overlap(stack, side, rtol)
        elif kind.startswith("chance_cka_"):
            out[kind] = chance_cka(stack, side)
        elif kind.startswith("angles_"):
            out[kind] = principal_angles_matrix(stack, side, rtol)
    return out


_CHANCE_OF = {"overlap_a": "chance_overlap_a", "overlap_b": "chance_overlap_b",
              "cka_a": "chance_cka_a", "cka_b": "chance_cka_b"}


@dataclass
class SimilarityResult:
    """Similarity matrices of every module: ``matrices[kind][module] -> (N, N)``; rows/columns follow ``tasks``."""

    tasks: list[str]
    modules: list[str]
    matrices: dict[str, dict[str, np.ndarray]]

    def kind(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self.matrices:
            raise ValueError(f"hydralib.analysis.similarity: kind {kind!r} was not computed; have {sorted(self.matrices)}")
        return self.matrices[kind]

    def corrected(self, kind: str) -> dict[str, np.ndarray]:
        """Chance-corrected matrices ``(sim - chance) / (1 - chance)`` per module (overlap/CKA; cosines: unchanged, chance 0)."""
        if kind not in _CHANCE_OF:
            return dict(self.kind(kind))
        chance = self.kind(_CHANCE_OF[kind])
        return {m: chance_corrected(v, chance[m]) for m, v in self.kind(kind).items()}

    def mean_matrix(self, kind: str, by: str = "all", corrected: bool = False) -> dict:
        """Module-averaged ``(N, N)`` matrix per group: ``{key: (N, N)}``, ``by`` as in :func:`~hydralib.analysis.core.aggregate`."""
        values = self.corrected(kind) if corrected else self.kind(kind)
        return aggregate(values, by=by)

    def offdiagonal_means(self, kind: str, by: str = "projection", corrected: bool = False) -> dict:
        """Mean over task pairs (i != j) and modules per group: ``{key: float}``."""
        values = self.corrected(kind) if corrected else self.kind(kind)
        return aggregate({m: offdiagonal_mean(v) for m, v in values.items()}, by=by)

    def summary(self) -> dict:
        """JSON-serialisable: for every scalar kind, the mean off-diagonal value overall, per projection and per layer."""
        out = {}
        for kind in self.matrices:
            if kind.startswith("angles_"):
                continue
            out[kind] = {
                "overall": self.offdiagonal_means(kind, by="all").get("all"),
                "by_projection": self.offdiagonal_means(kind, by="projection"),
                "by_layer": self.offdiagonal_means(kind, by="layer"),
            }
        return to_jsonable(out)


def adapter_similarity(
    adapters,
    kinds: Iterable[str] | None = None,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    rtol: float = 1e-6,
    device=None,
    progress: bool = False,
    num_threads: int | None = 1,
) -> SimilarityResult:
    """Task x task similarity matrices of every module (or ``modules``) of an adapter set.

    ``adapters``: an :class:`~hydralib.adapters.AdapterSet` or a mapping
    ``{task: {module: (A, B, scaling)}}``; ``kinds`` as in :func:`module_similarity`.
    Factored form, one module at a time. ``num_threads``: torch threads during
    the call (see :func:`~hydralib.analysis.core.torch_threads`; None: unchanged).
    """
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    kinds = list(DEFAULT_KINDS if kinds is None else kinds)
    matrices: dict[str, dict[str, np.ndarray]] = {k: {} for k in kinds}
    names = []
    with torch_threads(num_threads):
        for module, stack in iter_stacks(adapters, modules, tasks, device=device, progress=progress):
            names.append(module)
            for kind, value in module_similarity(stack, kinds, rtol).items():
                matrices[kind][module] = value
    return SimilarityResult(tasks=tasks, modules=names, matrices=matrices)
