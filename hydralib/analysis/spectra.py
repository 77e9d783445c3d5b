"""Singular spectra of LoRA factors and updates, per task and stacked across tasks.

All functions work on the factors (A_i ``(r, d_in)``, B_i ``(d_out, r)``,
scaling s_i) and never form a dense ``(d_out, d_in)`` update:

* :func:`factor_singular_values`: singular values of each A_i or B_i ``(N, r)``.
* :func:`delta_singular_values`: singular values of each ``dW_i = s_i B_i A_i``
  ``(N, r)``, from the r x r problem: ``B = Q_B R_B``, ``A^T = Q_A R_A`` (QR),
  then ``svd(dW) = |s| svd(R_B R_A^T)`` since Q_B, Q_A have orthonormal columns.
* :func:`stacked_singular_values`: spectrum of the stacked factors
  ``[A_1; ...; A_N]`` ``(N r, d_in)`` or ``[B_1 ... B_N]`` ``(d_out, N r)``, from
  the eigenvalues of whichever Gram matrix is smaller (``N r x N r`` or
  ``d x d``). Eigenvalues of a Gram matrix carry about half the relative
  precision of the singular values themselves: directions with sigma below
  ~1e-8 sigma_max are noise, which does not matter for energy fractions.
* :func:`captured_energy` and :func:`shared_directions`: how many shared
  directions capture a fraction q of *every* task's factor (definition below).
* :func:`energy_curve` (cumulative fraction of squared singular values) and
  :func:`effective_rank` (Roy & Vetterli 2007) work on any spectrum.

Shared directions. Let ``X = [A_1; ...; A_N]`` with SVD ``X = U S V^T`` and
``V_k`` its top-k right singular vectors (the k directions of R^d_in that carry
most of the stacked energy). Task i keeps the fraction
``c_i(k) = ||A_i V_k||_F^2 / ||A_i||_F^2`` of its energy when projected onto them.
``shared_directions(q)`` is the smallest k with ``c_i(k) >= q`` for every task i
(tasks with an all-zero factor are skipped). For B the same is done on the
column space: ``X = [B_1^T; ...; B_N^T]``, ``c_i(k) = ||U_k^T B_i||_F^2 / ||B_i||_F^2``.
It lies between ``max_i rank(A_i)`` (all tasks share one subspace) and
``min(sum_i r_i, d)`` (no direction is shared); compare it with that range,
since the B side of a small module (d_out = 192 for SmolLM2's k/v) is capped
lower than the A side. These are factor-level quantities: A -> G A with a
non-orthogonal G changes them even though dW does not change (the row space,
and hence ``max`` and ``min`` above, do not).

Worked example
--------------
Two tasks that share one direction of R^3 and differ in another:

>>> import torch
>>> from hydralib.analysis.core import FactorStack
>>> from hydralib.analysis.spectra import stacked_singular_values, shared_directions, effective_rank
>>> A1 = torch.tensor([[1., 0., 0.], [0., .1, 0.]])
>>> A2 = torch.tensor([[1., 0., 0.], [0., 0., .1]])
>>> B = torch.eye(2)
>>> st = FactorStack([A1, A2], [B, B], [1.0, 1.0])
>>> [round(float(x), 4) for x in stacked_singular_values(st, "a")]  # sqrt(2), .1, .1
[1.4142, 0.1, 0.1]
>>> shared_directions(st, "a", q=0.9)  # the shared direction holds 1/1.01 of each task
1
>>> shared_directions(st, "a", q=0.995)
3
>>> round(float(effective_rank([1.0, 1.0, 0.0])), 6)
2.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .core import (
    FactorStack,
    _side,
    aggregate,
    as_adapter_set,
    iter_stacks,
    parse_module_name,
    to_jsonable,
    torch_threads,
)

_TOL = 1e-10


# --------------------------------------------------------------------------- generic spectra


def energy_curve(singular_values) -> np.ndarray:
    """Cumulative fraction of squared singular values along the last axis.

    ``singular_values``: ``(..., K)`` (NaN entries count as 0). Returns ``(..., K)``
    with ``curve[..., k-1] = sum_{j<=k} s_j^2 / sum_j s_j^2`` (values sorted
    descending first); NaN where the total is 0.
    """
    s = np.nan_to_num(np.asarray(singular_values, dtype=float), nan=0.0)
    s = -np.sort(-np.abs(s), axis=-1)
    e = np.cumsum(s**2, axis=-1)
    total = e[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, e / np.where(total > 0, total, 1.0), np.nan)


def effective_rank(singular_values) -> np.ndarray | float:
    """Entropy effective rank of Roy & Vetterli (2007) along the last axis.

    ``erank = exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum_j s_j`` (singular
    values, not their squares, normalised to sum 1). It is 1 for rank one, k
    for k equal singular values, and between the two otherwise. NaN entries
    count as 0; all-zero spectra give NaN. Returns a float for 1-D input.
    """
    s = np.nan_to_num(np.abs(np.asarray(singular_values, dtype=float)), nan=0.0)
    total = s.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / total
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        out = np.exp(terms.sum(axis=-1))
    out = np.where(total[..., 0] > 0, out, np.nan)
    return float(out) if out.ndim == 0 else out


def rank_for_energy(singular_values, q: float = 0.9) -> np.ndarray | int:
    """Smallest k whose top-k squared singular values hold at least ``q`` of the total (last axis)."""
    curve = energy_curve(singular_values)
    k = (curve < q - _TOL).sum(axis=-1) + 1
    k = np.where(np.isnan(curve[..., -1]), 0, np.minimum(k, curve.shape[-1]))
    return int(k) if np.ndim(k) == 0 else k


# --------------------------------------------------------------------------- inputs


def _row_factors(factors, side: str) -> tuple[torch.Tensor, list[int]]:
    """``(N, r, d)`` row factors (A_i, or B_i^T) and ranks from a FactorStack or a list of A_i / B_i."""
    side = _side(side)
    if isinstance(factors, FactorStack):
        return factors.rows(side), list(factors.ranks)
    mats = [torch.as_tensor(x).detach().to(torch.float64) for x in factors]
    if not mats:
        raise ValueError("hydralib.analysis.spectra: no factors given")
    if any(m.ndim != 2 for m in mats):
        raise ValueError("hydralib.analysis.spectra: every factor must be a 2-D tensor")
    if side == "b":
        mats = [m.T for m in mats]
    d = {m.shape[1] for m in mats}
    if len(d) != 1:
        name = "d_in of A" if side == "a" else "d_out of B"
        raise ValueError(f"hydralib.analysis.spectra: factors disagree on {name}: {sorted(d)}")
    ranks = [int(m.shape[0]) for m in mats]
    r = max(ranks)
    rows = torch.zeros(len(mats), r, d.pop(), dtype=torch.float64)
    for i, m in enumerate(mats):
        rows[i, : m.shape[0]] = m
    return rows, ranks


def _nan_beyond_rank(values: torch.Tensor, ranks: Sequence[int]) -> np.ndarray:
    out = values.detach().cpu().numpy().astype(float)
    for i, r in enumerate(ranks):
        out[i, r:] = np.nan
    return out


# --------------------------------------------------------------------------- per task


def factor_singular_values(factors, side: str) -> np.ndarray:
    """Singular values of each task's factor: A_i (``side="a"``) or B_i (``"b"``).

    ``factors``: a :class:`FactorStack` (values from the eigenvalues of the r x r
    Gram blocks, cached) or a list of N tensors A_i ``(r_i, d_in)`` / B_i
    ``(d_out, r_i)`` (direct SVD). Returns ``(N, r)`` descending, NaN beyond r_i.
    Acts on the factors (not on dW).
    """
    if isinstance(factors, FactorStack):
        return _nan_beyond_rank(factors.singular_values(side), factors.ranks)
    rows, ranks = _row_factors(factors, side)
    return _nan_beyond_rank(torch.linalg.svdvals(rows), ranks)


def delta_singular_values(stack: FactorStack) -> np.ndarray:
    """Singular values of each update ``dW_i = s_i B_i A_i`` ``(d_out, d_in)``, in factored form.

    With ``B_i = Q_B R_B`` and ``A_i^T = Q_A R_A`` (thin QR),
    ``dW_i = s_i Q_B (R_B R_A^T) Q_A^T`` and the singular values of dW_i are
    ``|s_i|`` times those of the ``r x r`` matrix ``R_B R_A^T``. Returns ``(N, r)``
    descending, NaN beyond r_i. Cost O(N r^2 (d_in + d_out)).
    """
    _, rb = torch.linalg.qr(stack.b)  # (N, r, r)
    _, ra = torch.linalg.qr(stack.a.transpose(1, 2))  # (N, r, r)
    s = torch.linalg.svdvals(rb @ ra.transpose(1, 2)) * stack.scaling.abs()[:, None]
    return _nan_beyond_rank(s, stack.ranks)


# --------------------------------------------------------------------------- stacked across tasks


def stacked_decomposition(factors, side: str, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum of the stacked factors and how each task's energy splits over its directions.

    ``side="a"``: ``X = [A_1; ...; A_N]`` ``(sum r_i, d_in)``; ``side="b"``:
    ``X = [B_1^T; ...; B_N^T]``, i.e. the transpose of ``[B_1 ... B_N]`` ``(d_out, sum r_i)``.
    With ``normalize=True`` each task's factor is first scaled to unit Frobenius
    norm, so that large factors do not dominate the shared directions.

    Returns ``(sigma, energy)``: the ``K = min(sum r_i, d)`` singular values of X
    (descending) and ``energy`` ``(N, K)`` with ``energy[i, j] = ||X_i v_j||^2``,
    the squared norm of task i's factor along the j-th right singular vector
    ``v_j`` of X (rows of ``energy`` sum to ``||X_i||_F^2``).
    Computed from the eigen-decomposition of the smaller Gram matrix:
    ``X X^T = W L W^T`` (``N r x N r``) gives ``energy[i, j] = L_j ||W[rows of i, j]||^2``;
    ``X^T X = V L V^T`` (``d x d``) gives ``energy[i, j] = ||X_i v_j||^2`` directly.
    """
    rows, ranks = _row_factors(factors, side)
    if normalize:
        norms = rows.flatten(1).norm(dim=1)
        rows = rows / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None, None]
    n, r, d = rows.shape
    k = min(sum(ranks), d)
    flat = rows.reshape(n * r, d)
    if n * r <= d:
        if isinstance(factors, FactorStack) and not normalize:
            g = factors.gram(side).permute(0, 2, 1, 3).reshape(n * r, n * r)
        else:
            g = flat @ flat.T
        lam, w = torch.linalg.eigh(g)
        lam, w = lam.flip(0)[:k].clamp_min(0), w.flip(1)[:, :k]
        energy = (w.reshape(n, r, -1) ** 2).sum(dim=1) * lam[None, :]
    else:
        lam, v = torch.linalg.eigh(flat.T @ flat)
        lam, v = lam.flip(0)[:k].clamp_min(0), v.flip(1)[:, :k]
        energy = ((flat @ v).reshape(n, r, -1) ** 2).sum(dim=1)
    return lam.sqrt().cpu().numpy(), energy.cpu().numpy()


def stacked_singular_values(factors, side: str, normalize: bool = False) -> np.ndarray:
    """Singular values ``(min(sum r_i, d),)`` of ``[A_1; ...; A_N]`` (``"a"``) or ``[B_1 ... B_N]`` (``"b"``); see :func:`stacked_decomposition`."""
    return stacked_decomposition(factors, side, normalize)[0]


def captured_energy(factors, side: str, normalize: bool = False) -> np.ndarray:
    """Fraction of each task's factor energy captured by the top-k shared directions, k = 1..K.

    Returns ``(N, K)`` with ``c[i, k-1] = ||X_i V_k||_F^2 / ||X_i||_F^2`` (see
    :func:`stacked_decomposition`); NaN rows for all-zero factors. Acts on factors.
    """
    rows, _ = _row_factors(factors, side)
    _, energy = stacked_decomposition(factors, side, normalize)
    return _captured(rows, energy, normalize)


def _captured(rows: torch.Tensor, energy: np.ndarray, normalize: bool) -> np.ndarray:
    """Cumulative captured fraction ``(N, K)`` from per-direction energies; NaN rows for zero factors."""
    norms = (rows.flatten(1) ** 2).sum(dim=1).cpu().numpy()
    if normalize:
        norms = np.where(norms > 0, 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms[:, None] > 0, np.cumsum(energy, axis=1) / np.where(norms > 0, norms, 1.0)[:, None], np.nan)


def shared_directions_from_captured(captured: np.ndarray, q: float = 0.9) -> int:
    """Smallest k with ``captured[i, k-1] >= q`` for every task with a non-zero factor (0 if none)."""
    if not 0 < q <= 1:
        raise ValueError(f"hydralib.analysis.spectra: q must be in (0, 1], got {q}")
    c = np.asarray(captured, dtype=float)
    valid = ~np.isnan(c[:, 0]) if c.size else np.zeros(0, bool)
    if not valid.any():
        return 0
    worst = c[valid].min(axis=0)
    ok = np.nonzero(worst >= q - _TOL)[0]
    return int(ok[0] + 1) if ok.size else int(c.shape[1])


def shared_directions(factors, side: str, q: float = 0.9, normalize: bool = False) -> int:
    """Number of shared directions needed to keep ``q`` of every task's A (``"a"``) or B (``"b"``).

    The smallest k such that projecting each A_i onto the top-k right singular
    subspace of ``[A_1; ...; A_N]`` keeps at least ``q`` of ``||A_i||_F^2`` for
    every task i (B: the top-k left singular subspace of ``[B_1 ... B_N]`` and
    ``||B_i||_F^2``). Between ``max_i rank_i`` and ``min(sum_i r_i, d)``.
    """
    return shared_directions_from_captured(captured_energy(factors, side, normalize), q)


# --------------------------------------------------------------------------- per module and per set


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


@dataclass
class ModuleSpectra:
    """Spectra of one module over N tasks (all from factors).

    Arrays: ``a``, ``b``, ``delta`` ``(N, r)`` singular values of A_i, B_i, dW_i
    (NaN beyond r_i); ``stacked_a`` ``(min(sum r_i, d_in),)`` and ``stacked_b``
    ``(min(sum r_i, d_out),)``; ``captured_a`` / ``captured_b`` ``(N, K)`` (see
    :func:`captured_energy`). ``shared_a`` / ``shared_b``: shared directions for
    ``q``; ``max_shared_a`` / ``max_shared_b``: their upper bound ``min(sum r_i, d)``.
    """

    module: str
    tasks: list[str]
    shape: tuple[int, int]
    ranks: list[int]
    q: float
    a: np.ndarray
    b: np.ndarray
    delta: np.ndarray
    stacked_a: np.ndarray
    stacked_b: np.ndarray
    captured_a: np.ndarray
    captured_b: np.ndarray
    shared_a: int
    shared_b: int
    layer: int | None = field(init=False)
    projection: str = field(init=False)

    def __post_init__(self):
        key = parse_module_name(self.module)
        self.layer, self.projection = key.layer, key.projection

    @property
    def max_shared_a(self) -> int:
        return int(self.stacked_a.shape[0])

    @property
    def max_shared_b(self) -> int:
        return int(self.stacked_b.shape[0])

    def summary(self) -> dict:
        """One tidy row of scalars (JSON-serialisable) for this module.

        ``erank_*``: mean over tasks of the effective rank of A_i, B_i, dW_i;
        ``stacked_erank_*``: effective rank of the stacked factors;
        ``shared_*`` and ``shared_*_fraction`` = shared / max_shared.
        """
        d_out, d_in = self.shape
        row = {
            "module": self.module, "layer": self.layer, "projection": self.projection,
            "d_out": d_out, "d_in": d_in, "n_tasks": len(self.tasks), "rank": max(self.ranks), "q": self.q,
            "erank_a": _nanmean(effective_rank(self.a)),
            "erank_b": _nanmean(effective_rank(self.b)),
            "erank_delta": _nanmean(effective_rank(self.delta)),
            "stacked_erank_a": effective_rank(self.stacked_a),
            "stacked_erank_b": effective_rank(self.stacked_b),
            "shared_a": self.shared_a, "shared_b": self.shared_b,
            "max_shared_a": self.max_shared_a, "max_shared_b": self.max_shared_b,
            "shared_a_fraction": self.shared_a / self.max_shared_a if self.max_shared_a else float("nan"),
            "shared_b_fraction": self.shared_b / self.max_shared_b if self.max_shared_b else float("nan"),
        }
        return to_jsonable(row)


def module_spectra(stack: FactorStack, q: float = 0.9, normalize: bool = False) -> ModuleSpectra:
    """All spectra of one module (a :class:`FactorStack` of N tasks); see :class:`ModuleSpectra`."""
    out = {}
    for side in ("a", "b"):
        sigma, energy = stacked_decomposition(stack, side, normalize)
        captured = _captured(stack.rows(side), energy, normalize)
        out[side] = (sigma, captured, shared_directions_from_captured(captured, q))
    return ModuleSpectra(
        module=stack.module, tasks=list(stack.tasks), shape=(stack.d_out, stack.d_in), ranks=list(stack.ranks), q=q,
        a=factor_singular_values(stack, "a"), b=factor_singular_values(stack, "b"),
        delta=delta_singular_values(stack),
        stacked_a=out["a"][0], stacked_b=out["b"][0],
        captured_a=out["a"][1], captured_b=out["b"][1],
        shared_a=out["a"][2], shared_b=out["b"][2],
    )


@dataclass
class SpectraResult:
    """Spectra of every module of an adapter set: ``modules[name] -> ModuleSpectra``."""

    tasks: list[str]
    q: float
    modules: dict[str, ModuleSpectra]

    def table(self) -> list[dict]:
        """One row of scalars per module (:meth:`ModuleSpectra.summary`), a tidy list of dicts."""
        return [m.summary() for m in self.modules.values()]

    def values(self, field_name: str) -> dict[str, object]:
        """``{module: value}`` of one summary field (e.g. ``"shared_a"``) or array attribute
        (e.g. ``"stacked_a"``; ``"energy_a"``/``"energy_b"``/``"energy_delta"`` for energy curves,
        the latter averaged over tasks)."""
        out = {}
        for name, m in self.modules.items():
            if field_name in ("energy_a", "energy_b"):
                out[name] = energy_curve(getattr(m, "stacked_" + field_name[-1]))
            elif field_name == "energy_delta":
                curves = energy_curve(m.delta)
                ok = np.isfinite(curves[:, -1])
                out[name] = curves[ok].mean(axis=0) if ok.any() else np.full(curves.shape[1], np.nan)
            elif hasattr(m, field_name) and isinstance(getattr(m, field_name), np.ndarray):
                out[name] = getattr(m, field_name)
            else:
                row = m.summary()
                if field_name not in row:
                    raise ValueError(f"hydralib.analysis.spectra: unknown field {field_name!r}; e.g. {sorted(row)}")
                out[name] = row[field_name]
        return out

    def aggregate(self, field_name: str, by: str = "projection", reduce: str = "mean") -> dict:
        """Aggregate one field over modules by ``"projection"``, ``"layer"`` or ``"all"``.

        Energy curves of different length (q vs k/v) are padded with 1.0;
        other arrays with NaN.
        """
        pad = 1.0 if field_name.startswith("energy") else float("nan")
        return aggregate(self.values(field_name), by=by, reduce=reduce, pad=pad)

    def summary(self) -> dict:
        """JSON-serialisable summary: mean per projection and per layer of the main scalars."""
        fields = ("erank_a", "erank_b", "erank_delta", "stacked_erank_a", "stacked_erank_b",
                  "shared_a", "shared_b", "max_shared_a", "max_shared_b", "shared_a_fraction", "shared_b_fraction")
        return to_jsonable({
            "q": self.q, "n_tasks": len(self.tasks), "n_modules": len(self.modules),
            "overall": {f: aggregate(self.values(f), by="all")["all"] for f in fields},
            "by_projection": {f: self.aggregate(f, "projection") for f in fields},
            "by_layer": {f: self.aggregate(f, "layer") for f in fields},
        })


def adapter_spectra(
    adapters,
    q: float = 0.9,
    modules: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    normalize: bool = False,
    device=None,
    progress: bool = False,
    num_threads: int | None = 1,
) -> SpectraResult:
    """Spectra of every module (or ``modules``) over ``tasks`` of an adapter set.

    ``adapters``: an :class:`~hydralib.adapters.AdapterSet` or a mapping
    ``{task: {module: (A, B, scaling)}}``. Works on factors, module by module;
    memory is O(N r (d_in + d_out) + (N r)^2) per module. ``num_threads``: torch
    threads during the call (see :func:`~hydralib.analysis.core.torch_threads`).
    """
    adapters = as_adapter_set(adapters)
    tasks = list(adapters.tasks if tasks is None else tasks)
    results = {}
    with torch_threads(num_threads):
        for module, stack in iter_stacks(adapters, modules, tasks, device=device, progress=progress):
            results[module] = module_spectra(stack, q=q, normalize=normalize)
    return SpectraResult(tasks=tasks, q=q, modules=results)
