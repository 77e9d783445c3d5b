"""Shared plumbing of :mod:`hydralib.analysis`: factor stacks, module names, aggregation.

Everything in the analysis package works on the LoRA *factors* of N tasks at
one module, held by a :class:`FactorStack`: A_i ``(r_i, d_in)``, B_i
``(d_out, r_i)`` and scalings s_i, so that the update is
``dW_i = s_i * B_i @ A_i`` ``(d_out, d_in)``. A stack never forms a dense
``d_out x d_in`` matrix; it caches the small Gram matrices that the spectra
and similarity functions share:

* ``gram("a")``: blocks ``A_i A_j^T``, shape ``(N, N, r, r)``;
* ``gram("b")``: blocks ``B_i^T B_j``, shape ``(N, N, r, r)``.

Tasks of different rank are zero-padded to ``r = max_i r_i`` (zero rows of A,
zero columns of B): that leaves every dW, Gram trace and subspace unchanged.
Computations are in float64.

"Side" names the factor a quantity looks at: ``"a"`` is the row space of A_i
(the input directions the update reads, in R^d_in) and ``"b"`` the column space
of B_i (the output directions it writes, in R^d_out). ``rows("b")`` stores
B_i^T so that both sides are handled as row spaces.

Module names are parsed into (layer, projection) for aggregation:
the layer is the first integer component, the projection the last component.

Example
-------
>>> import torch
>>> from hydralib.analysis.core import FactorStack, parse_module_name, aggregate
>>> parse_module_name("model.layers.12.self_attn.q_proj")
ModuleKey(layer=12, projection='q_proj')
>>> parse_module_name("encoder.layer.1.attention.self.query")
ModuleKey(layer=1, projection='query')
>>> A = [torch.randn(2, 5) for _ in range(3)]
>>> B = [torch.randn(4, 2) for _ in range(3)]
>>> st = FactorStack(A, B, [1.0, 1.0, 1.0], module="m")
>>> st.n_tasks, st.d_out, st.d_in, st.ranks, tuple(st.gram("a").shape)
(3, 4, 5, [2, 2, 2], (3, 3, 2, 2))
>>> aggregate({"model.layers.0.q_proj": 1.0, "model.layers.1.q_proj": 3.0,
...            "model.layers.0.k_proj": 5.0}, by="projection")
{'q_proj': 2.0, 'k_proj': 5.0}
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

SIDES = ("a", "b")
_INT = re.compile(r"^\d+$")
_SUFFIXES = {"weight", "bias", "lora_A", "lora_B", "default", "base_layer"}


# --------------------------------------------------------------------------- module names


@dataclass(frozen=True)
class ModuleKey:
    """Where a module sits: ``layer`` (first integer component, None if none) and ``projection`` (last component)."""

    layer: int | None
    projection: str


def parse_module_name(name: str) -> ModuleKey:
    """Parse a module path into (layer, projection).

    ``'model.layers.12.self_attn.q_proj'`` -> ``(12, 'q_proj')``;
    ``'transformer.h.3.attn.c_attn'`` -> ``(3, 'c_attn')``;
    ``'encoder.layer.1.attention.self.query'`` -> ``(1, 'query')``.
    Trailing parameter suffixes (``lora_A``, ``weight``, ``default``) are ignored.
    A name without an integer component has ``layer=None``.
    """
    parts = [p for p in str(name).split(".") if p]
    while len(parts) > 1 and parts[-1] in _SUFFIXES:
        parts.pop()
    if not parts:
        raise ValueError(f"hydralib.analysis: cannot parse an empty module name {name!r}")
    layer = next((int(p) for p in parts if _INT.match(p)), None)
    return ModuleKey(layer, parts[-1])


def group_key(module: str, by: str):
    """Aggregation key of ``module``: ``by`` is ``"projection"``, ``"layer"``, ``"layer_projection"`` or ``"all"``."""
    key = parse_module_name(module)
    if by == "projection":
        return key.projection
    if by == "layer":
        return key.layer
    if by == "layer_projection":
        return f"{key.layer}.{key.projection}"
    if by == "all":
        return "all"
    raise ValueError(f"hydralib.analysis: unknown grouping {by!r}; use 'projection', 'layer', 'layer_projection' or 'all'")


def _pad_stack(arrays: list[np.ndarray], pad: float) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1:
        return np.stack(arrays)
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        raise ValueError(f"hydralib.analysis: cannot aggregate arrays of shapes {sorted(shapes)}")
    target = tuple(max(s[k] for s in shapes) for k in range(ndims.pop()))
    out = np.full((len(arrays),) + target, pad, dtype=float)
    for n, a in enumerate(arrays):
        out[(n,) + tuple(slice(0, s) for s in a.shape)] = a
    return out


def aggregate(
    values: Mapping[str, Any],
    by: str = "projection",
    reduce: str = "mean",
    pad: float = float("nan"),
) -> dict:
    """Average per-module values (scalars or arrays) over groups of modules.

    ``values``: ``{module: float | array}``; arrays of one group must have the
    same number of dimensions and are padded with ``pad`` to a common shape
    (e.g. ``pad=1.0`` for energy curves of different length). NaNs are ignored
    (``nanmean``). ``by``: ``"projection"`` (q_proj, k_proj, ...), ``"layer"``
    (layer index, keys sorted), ``"layer_projection"`` or ``"all"``.
    ``reduce``: ``"mean"``, ``"median"``, ``"std"``, ``"min"``, ``"max"`` or
    ``"count"``. Returns ``{key: float | np.ndarray}`` in order of first
    appearance (layers sorted numerically).
    """
    reducers: dict[str, Callable] = {
        "mean": np.nanmean, "median": np.nanmedian, "std": np.nanstd,
        "min": np.nanmin, "max": np.nanmax,
    }
    if reduce not in reducers and reduce != "count":
        raise ValueError(f"hydralib.analysis: unknown reduce {reduce!r}; use one of {sorted(reducers) + ['count']}")
    groups: dict[Any, list] = {}
    for module, value in values.items():
        groups.setdefault(group_key(module, by), []).append(np.asarray(value, dtype=float))
    if by == "layer":
        groups = dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] if kv[0] is not None else 0)))
    out = {}
    for key, arrays in groups.items():
        if reduce == "count":
            out[key] = len(arrays)
            continue
        stacked = _pad_stack(arrays, pad)
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            result = reducers[reduce](stacked, axis=0)
        out[key] = float(result) if np.ndim(result) == 0 else result
    return out


class _quiet_nan_warnings:
    """Silence numpy's 'mean of empty slice' warnings inside a block (all-NaN groups give NaN)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# --------------------------------------------------------------------------- matrices


def offdiagonal(matrix) -> np.ndarray:
    """The off-diagonal entries ``i < j`` of a square ``(N, N)`` matrix, as a 1-D array (each pair once)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"hydralib.analysis: expected a square (N, N) matrix, got shape {m.shape}")
    i, j = np.triu_indices(m.shape[0], k=1)
    return m[i, j]


def offdiagonal_mean(matrix) -> float:
    """Mean of the off-diagonal entries of an ``(N, N)`` matrix (NaNs ignored; NaN if N < 2)."""
    values = offdiagonal(matrix)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def to_jsonable(obj):
    """Convert numpy/torch scalars and arrays, tuples and NaN/Inf to plain JSON types (NaN -> None)."""
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _json_key(key) -> str:
    if isinstance(key, (np.integer, int)) and not isinstance(key, bool):
        return str(int(key))
    return "null" if key is None else str(key)


# --------------------------------------------------------------------------- factor stack


class FactorStack:
    """The LoRA factors of N tasks at one module, in float64, zero-padded to a common rank.

    Parameters
    ----------
    lora_a: N tensors A_i of shape ``(r_i, d_in)``.
    lora_b: N tensors B_i of shape ``(d_out, r_i)``.
    scaling: N floats s_i (``dW_i = s_i B_i A_i``).
    module: name used in error messages and results.
    tasks: N task names (default ``"0"``, ``"1"``, ...).
    device: where to compute (default CPU).

    Attributes: ``a`` ``(N, r, d_in)``, ``b`` ``(N, d_out, r)`` (zero-padded to
    ``r = max r_i``), ``scaling`` ``(N,)`` float64 tensor, ``ranks`` (list of r_i),
    ``n_tasks``, ``d_in``, ``d_out``, ``rank``. Gram blocks, per-task singular
    values and whitening maps (orthonormal bases) are computed on first use and cached.
    """

    def __init__(
        self,
        lora_a: Sequence[torch.Tensor],
        lora_b: Sequence[torch.Tensor],
        scaling: Sequence[float] | torch.Tensor | np.ndarray,
        module: str = "<module>",
        tasks: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ):
        self.module = module
        lora_a, lora_b = list(lora_a), list(lora_b)
        scaling = [float(s) for s in (scaling.tolist() if hasattr(scaling, "tolist") else scaling)]
        n = len(lora_a)
        self.tasks = [str(t) for t in tasks] if tasks is not None else [str(i) for i in range(n)]
        where = f"hydralib.analysis: module {module!r}"
        if n == 0:
            raise ValueError(f"{where}: no tasks given")
        if len(lora_b) != n or len(scaling) != n or len(self.tasks) != n:
            raise ValueError(
                f"{where}: {n} lora_a, {len(lora_b)} lora_b, {len(scaling)} scalings and {len(self.tasks)} "
                "task names (need one of each per task)"
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        a_list, b_list = [], []
        for task, A, B in zip(self.tasks, lora_a, lora_b):
            A = torch.as_tensor(A).detach().to(device=device, dtype=torch.float64)
            B = torch.as_tensor(B).detach().to(device=device, dtype=torch.float64)
            if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
                raise ValueError(
                    f"{where}, task {task!r}: lora_a {tuple(A.shape)} and lora_b {tuple(B.shape)} are not "
                    "(r, d_in) and (d_out, r)"
                )
            if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
                raise ValueError(f"{where}, task {task!r}: factors contain NaN/Inf")
            a_list.append(A)
            b_list.append(B)
        d_in, d_out = a_list[0].shape[1], b_list[0].shape[0]
        for task, A, B in zip(self.tasks, a_list, b_list):
            if A.shape[1] != d_in or B.shape[0] != d_out:
                raise ValueError(
                    f"{where}, task {task!r}: update is {B.shape[0]} x {A.shape[1]} (d_out x d_in) but task "
                    f"{self.tasks[0]!r} has {d_out} x {d_in}"
                )
        self.ranks = [int(A.shape[0]) for A in a_list]
        self.rank = max(self.ranks)
        self.n_tasks, self.d_in, self.d_out = n, int(d_in), int(d_out)
        if len(set(self.ranks)) == 1:
            self.a = torch.stack(a_list)
            self.b = torch.stack(b_list)
        else:
            self.a = torch.zeros(n, self.rank, d_in, dtype=torch.float64, device=device)
            self.b = torch.zeros(n, d_out, self.rank, dtype=torch.float64, device=device)
            for i, (A, B) in enumerate(zip(a_list, b_list)):
                self.a[i, : A.shape[0]] = A
                self.b[i, :, : B.shape[1]] = B
        self.scaling = torch.tensor(scaling, dtype=torch.float64, device=device)
        self._cache: dict = {}

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_adapters(cls, adapters, module: str, tasks: Sequence[str] | None = None, device=None) -> "FactorStack":
        """The stack of ``module`` over ``tasks`` (default all) of an :class:`~hydralib.adapters.AdapterSet`."""
        adapters = as_adapter_set(adapters)
        if module not in adapters.modules:
            raise ValueError(f"hydralib.analysis: module {module!r} is not in the adapter set (e.g. {adapters.modules[:3]})")
        tasks = list(adapters.tasks if tasks is None else tasks)
        triples = [adapters.factors(t, module) for t in tasks]
        return cls([t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples],
                   module=module, tasks=tasks, device=device)

    # ---------------------------------------------------------------- views

    @property
    def equal_ranks(self) -> bool:
        return len(set(self.ranks)) == 1

    def dim(self, side: str) -> int:
        """Ambient dimension of ``side``: d_in for ``"a"``, d_out for ``"b"``."""
        return self.d_in if _side(side) == "a" else self.d_out

    def rows(self, side: str) -> torch.Tensor:
        """Per-task row factors ``(N, r, d)``: A_i for ``"a"`` (d = d_in), B_i^T for ``"b"`` (d = d_out)."""
        side = _side(side)
        if side == "a":
            return self.a
        key = ("rows", "b")
        if key not in self._cache:
            self._cache[key] = self.b.transpose(1, 2).contiguous()
        return self._cache[key]

    def gram(self, side: str) -> torch.Tensor:
        """Cross-task Gram blocks ``(N, N, r, r)``: ``A_i A_j^T`` (``"a"``) or ``B_i^T B_j`` (``"b"``)."""
        side = _side(side)
        key = ("gram", side)
        if key not in self._cache:
            x = self.rows(side).reshape(self.n_tasks * self.rank, -1)
            g = x @ x.T
            self._cache[key] = g.reshape(self.n_tasks, self.rank, self.n_tasks, self.rank).permute(0, 2, 1, 3)
        return self._cache[key]

    def gram_diagonal(self, side: str) -> torch.Tensor:
        """Per-task Gram blocks ``(N, r, r)``: ``A_i A_i^T`` (``"a"``) or ``B_i^T B_i`` (``"b"``)."""
        return torch.diagonal(self.gram(side), dim1=0, dim2=1).permute(2, 0, 1)

    def singular_values(self, side: str) -> torch.Tensor:
        """Singular values ``(N, r)`` of each A_i (``"a"``) or B_i (``"b"``), descending, from the Gram blocks.

        Padded directions (beyond r_i) are 0. Values below ~1e-8 of the largest are rounding noise.
        """
        key = ("svals", _side(side))
        if key not in self._cache:
            lam = torch.linalg.eigvalsh(self.gram_diagonal(side))
            self._cache[key] = lam.flip(-1).clamp_min(0).sqrt()
        return self._cache[key]

    def whitening(self, side: str, rtol: float = 1e-6) -> tuple[torch.Tensor, list[int]]:
        """Whitening maps ``W`` ``(N, r, r)`` with ``Q_i = W_i^T X_i`` an orthonormal basis of task i's subspace.

        ``X_i`` is A_i (``"a"``, row space) or B_i^T (``"b"``, column space of B_i).
        From ``X_i X_i^T = U diag(sigma^2) U^T``: ``W_i = U diag(1/sigma)`` restricted
        to the ``k_i`` directions with ``sigma > rtol * sigma_max`` (other columns
        zero). Returns ``(W, k)`` with the numerical ranks ``k_i`` (0 for a zero
        factor). Built from the r x r Gram blocks only: rounding is about
        ``1e-16 * (sigma_max / sigma_min)^2``, negligible unless a factor is
        nearly rank-deficient; keep ``rtol >= 1e-7``.
        """
        side = _side(side)
        key = ("whitening", side, rtol)
        if key not in self._cache:
            lam, u = torch.linalg.eigh(self.gram_diagonal(side))  # ascending
            lam, u = lam.flip(-1), u.flip(-1)
            sigma = lam.clamp_min(0).sqrt()
            keep = (sigma > rtol * sigma[:, :1]) & (sigma > 0)
            inv = torch.where(keep, 1.0 / torch.where(keep, sigma, torch.ones_like(sigma)), torch.zeros_like(sigma))
            self._cache[key] = (u * inv[:, None, :], [int(v) for v in keep.sum(dim=1).tolist()])
        return self._cache[key]

    def bases(self, side: str, rtol: float = 1e-6) -> tuple[torch.Tensor, list[int]]:
        """Orthonormal bases ``(N, r, d)`` of the row spaces of A_i (``"a"``) or column spaces of B_i (``"b"``).

        The first ``k_i`` rows of ``Q[i]`` span task i's subspace (the rest are zero);
        see :meth:`whitening` for ``k_i``. Forms ``N r d`` numbers (not needed by the
        similarity functions, which work from Gram blocks).
        """
        w, k = self.whitening(side, rtol)
        return w.transpose(1, 2) @ self.rows(side), k


def _side(side: str) -> str:
    s = str(side).lower()
    if s in ("a", "lora_a"):
        return "a"
    if s in ("b", "lora_b"):
        return "b"
    raise ValueError(f"hydralib.analysis: side must be 'a' (row space of A) or 'b' (column space of B), got {side!r}")


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch intra-op threads (restored afterwards); ``None`` leaves the setting.

    The analysis works on many small matrices (r x r blocks, Gram matrices of a
    few hundred rows), where extra threads gain little and, on a CPU shared with
    other jobs, OpenMP threads waiting for each other can make a run several
    times slower (measured here: 55 s with 2 threads against 8 s with 1 while
    other jobs were running). Set-level functions therefore default to 1.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- adapter sets


class _FactorsView:
    """Read-only stand-in for an AdapterSet built from ``{task: {module: (A, B, scaling)}}``."""

    def __init__(self, factors: Mapping[str, Mapping[str, tuple]], metadata: Mapping[str, dict] | None = None):
        if not factors:
            raise ValueError("hydralib.analysis: no tasks given")
        self.tasks = list(factors)
        self.modules = sorted(next(iter(factors.values())))
        for task, mods in factors.items():
            if sorted(mods) != self.modules:
                raise ValueError(f"hydralib.analysis: task {task!r} adapts other modules than task {self.tasks[0]!r}")
        self._factors = {t: dict(m) for t, m in factors.items()}
        self.metadata = {t: dict((metadata or {}).get(t, {})) for t in self.tasks}

    def factors(self, task: str, module: str):
        return self._factors[task][module]

    def shape(self, module: str) -> tuple[int, int]:
        A, B, _ = self._factors[self.tasks[0]][module]
        return int(B.shape[0]), int(A.shape[1])

    def rank(self, task: str, module: str) -> int:
        return int(self._factors[task][module][0].shape[0])


def as_adapter_set(adapters, metadata: Mapping[str, dict] | None = None):
    """Accept an :class:`~hydralib.adapters.AdapterSet` (anything with ``tasks``, ``modules``,
    ``factors(task, module)``; ``metadata`` optional) or a plain mapping
    ``{task: {module: (A, B, scaling)}}`` (wrapped, with ``metadata`` attached)."""
    if hasattr(adapters, "factors") and hasattr(adapters, "tasks") and hasattr(adapters, "modules"):
        if metadata is not None:
            raise ValueError("hydralib.analysis: metadata= is only for plain mappings; an AdapterSet carries its own")
        return adapters
    if isinstance(adapters, Mapping):
        return _FactorsView(adapters, metadata)
    raise TypeError(
        "hydralib.analysis: expected an AdapterSet or a mapping {task: {module: (A, B, scaling)}}, "
        f"got {type(adapters).__name__}"
    )


def task_metadata(adapters, tasks: Sequence[str] | None = None) -> list[dict]:
    """Metadata dicts of ``tasks`` (default all), in order."""
    adapters = as_adapter_set(adapters)
    tasks = adapters.tasks if tasks is None else tasks
    return [dict(getattr(adapters, "metadata", {}).get(t, {})) for t in tasks]


def combine_adapter_sets(sets: Sequence, seeds: Sequence[int] | None = None):
    """One adapter set from several (e.g. the zoo and its seed-control sets), for cross-set comparisons.

    Task names that occur in more than one set get a suffix ``@<k>`` (k = index of
    the set); ``metadata['task']`` keeps the original name (unless already set).
    ``seeds``, if given, sets ``metadata['seed']`` of every task of set k to ``seeds[k]``. All sets must adapt the same modules with the same shapes.
    Returns an :class:`~hydralib.adapters.AdapterSet` (factors shared, not copied).
    """
    from hydralib.adapters import AdapterSet

    sets = [as_adapter_set(s) for s in sets]
    if not sets:
        raise ValueError("hydralib.analysis.combine_adapter_sets: no adapter sets given")
    if seeds is not None and len(seeds) != len(sets):
        raise ValueError(f"hydralib.analysis.combine_adapter_sets: {len(seeds)} seeds for {len(sets)} sets")
    counts: dict[str, int] = {}
    for s in sets:
        for t in s.tasks:
            counts[t] = counts.get(t, 0) + 1
    factors, metadata = {}, {}
    for k, s in enumerate(sets):
        if sorted(s.modules) != sorted(sets[0].modules):
            raise ValueError(f"hydralib.analysis.combine_adapter_sets: set {k} adapts other modules than set 0")
        for t in s.tasks:
            name = f"{t}@{k}" if counts[t] > 1 else t
            factors[name] = {m: s.factors(t, m) for m in s.modules}
            meta = dict(getattr(s, "metadata", {}).get(t, {}))
            meta.setdefault("task", t)  # the underlying task, for seed replicates without application/language
            if seeds is not None:
                meta["seed"] = seeds[k]
            metadata[name] = meta
    base = getattr(sets[0], "base_model", None)
    return AdapterSet.from_factors(factors, base_model=base, metadata=metadata)


def iter_stacks(
    adapters,
    modules: Iterable[str] | None = None,
    tasks: Sequence[str] | None = None,
    device=None,
    progress: bool = False,
):
    """Yield ``(module, FactorStack)`` for ``modules`` (default all) of an adapter set, one at a time."""
    adapters = as_adapter_set(adapters)
    modules = list(adapters.modules if modules is None else modules)
    iterator = modules
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(modules, desc="modules", leave=False)
    for module in iterator:
        yield module, FactorStack.from_adapters(adapters, module, tasks=tasks, device=device)
