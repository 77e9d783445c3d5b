"""One-adapter merging baselines on dW: task arithmetic, TIES, DARE, DARE-TIES, magnitude pruning.

Every method here acts on the dense per-module deltas ``dW_i = s_i B_i A_i``
``(d_out, d_in)`` (dW space), not on the factors: peft's
``add_weighted_adapter`` non-SVD types combine A and B separately, which is a
different merge. The tensor work is done by :mod:`peft.utils.merge_utils`
(``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``,
``magnitude_prune``), with two additions:

* randomness is seeded: peft calls ``torch.bernoulli`` on the global RNG, so
  each call runs inside ``torch.random.fork_rng`` with a seed derived from
  ``(seed, module name)``; results are reproducible, do not depend on the
  order modules are merged in, and leave the caller's RNG untouched;
* a global scaling ``lam`` multiplies the merged dW (``dW = lam * merge(w, dW_i)``).

The merged dW is then stored as a LoRA of rank ``r_m`` by truncated SVD
(:func:`~.lowrank.truncated_svd_dense`); task arithmetic, being linear in the
deltas, takes the factored path instead (:func:`~.lowrank.lowrank_svd`) and
never forms a ``d_out x d_in`` matrix.

Methods are registered by name in :data:`MERGE_METHODS` with their paper.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> deltas = [torch.randn(8, 6, generator=g) for _ in range(3)]
>>> ta = merge_deltas(deltas, "task_arithmetic", weights=[1.0, 1.0, 1.0], lam=0.5)      # on dW
>>> torch.allclose(ta, 0.5 * sum(deltas))
True
>>> a = merge_deltas(deltas, "dare_ties", density=0.5, seed=3, module="layers.0.q_proj")
>>> b = merge_deltas(deltas, "dare_ties", density=0.5, seed=3, module="layers.0.q_proj")
>>> torch.equal(a, b)                                                                    # seeded
True
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch

from ..errors import AdapterError
from ..threads import map_modules
from .lowrank import check_factors, lowrank_svd, truncated_svd_dense
from ..synthetic import derive_seed

__all__ = [
    "MergeMethod",
    "MERGE_METHODS",
    "seeded_rng",
    "merge_deltas",
    "MergedLoRA",
    "merge_adapters",
]


@dataclass(frozen=True)
class MergeMethod:
    """A dW-space merge: ``fn(task_tensors, weights, **kwargs)`` from ``peft.utils.merge_utils``.

    ``peft_function`` names the function; ``fn`` imports it on first use (peft
    is slow to import, and HydraOpt alone does not need it).

    ``uses_density``: takes ``density`` (fraction of entries kept);
    ``random``: draws random masks (seeded here); ``linear``: the merge is a
    weighted sum of the deltas, so it can be done on the factors;
    ``sign_election``: takes ``majority_sign_method``; ``grid``: the
    hyper-parameter values to tune on a validation split, the same for every
    method (``lam`` always, ``density`` where used).
    """

    name: str
    peft_function: str
    paper: str
    uses_density: bool
    random: bool
    linear: bool
    sign_election: bool
    grid: Mapping[str, tuple] = field(default_factory=dict)

    @property
    def fn(self) -> Callable[..., torch.Tensor]:
        from peft.utils import merge_utils

        return getattr(merge_utils, self.peft_function)


_LAMS = (0.25, 0.5, 0.75, 1.0, 1.5)
_DENSITIES = (0.1, 0.3, 0.5, 0.7, 0.9)

MERGE_METHODS: dict[str, MergeMethod] = {
    "task_arithmetic": MergeMethod(
        "task_arithmetic", "task_arithmetic",
        "Ilharco et al. (2023), Editing Models with Task Arithmetic, ICLR, arXiv:2212.04089",
        uses_density=False, random=False, linear=True, sign_election=False, grid={"lam": _LAMS},
    ),
    "ties": MergeMethod(
        "ties", "ties",
        "Yadav et al. (2023), TIES-Merging: Resolving Interference When Merging Models, NeurIPS, arXiv:2306.01708",
        uses_density=True, random=False, linear=False, sign_election=True, grid={"lam": _LAMS, "density": _DENSITIES},
    ),
    "dare_linear": MergeMethod(
        "dare_linear", "dare_linear",
        "Yu et al. (2024), Language Models are Super Mario: Absorbing Abilities from Homologous Models "
        "as a Free Lunch, ICML, arXiv:2311.03099",
        uses_density=True, random=True, linear=False, sign_election=False, grid={"lam": _LAMS, "density": _DENSITIES},
    ),
    "dare_ties": MergeMethod(
        "dare_ties", "dare_ties",
        "Yu et al. (2024), arXiv:2311.03099 (DARE), with the sign election of TIES (Yadav et al. 2023, arXiv:2306.01708)",
        uses_density=True, random=True, linear=False, sign_election=True, grid={"lam": _LAMS, "density": _DENSITIES},
    ),
    "magnitude_prune": MergeMethod(
        "magnitude_prune", "magnitude_prune",
        "magnitude pruning of each delta (the trim step of TIES, Yadav et al. 2023, arXiv:2306.01708), then task arithmetic",
        uses_density=True, random=False, linear=False, sign_election=False, grid={"lam": _LAMS, "density": _DENSITIES},
    ),
}


#: Held while a random merge draws from torch's process-wide RNG (:func:`merge_deltas`), so that modules merged
#: side by side in threads (:func:`hydralib.threads.map_modules`) draw their own seeded masks.
_GLOBAL_RNG = threading.Lock()


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block on the global RNG of ``device`` seeded with ``seed``; restore the RNG afterwards.

    peft's ``random_pruning`` calls ``torch.bernoulli`` without a generator, so
    this is how DARE is made reproducible without copying peft's code.
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.random.default_generator.manual_seed(int(seed))
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            yield


def _weights_tensor(weights, n: int, like: torch.Tensor, module: str) -> torch.Tensor:
    if weights is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    w = torch.as_tensor([float(x) for x in weights], dtype=like.dtype, device=like.device)
    if w.shape != (n,):
        raise AdapterError(f"module {module}: {w.numel()} weights for {n} deltas")
    return w


def merge_deltas(
    deltas: Sequence[torch.Tensor],
    method: str = "task_arithmetic",
    weights: Sequence[float] | torch.Tensor | None = None,
    lam: float = 1.0,
    density: float | None = None,
    seed: int = 0,
    module: str = "<module>",
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """Merge dense per-task deltas of one module into one delta; on dW.

    ``deltas``: N tensors ``(d_out, d_in)``; ``weights`` ``(N,)`` (default all
    1); returns ``lam * merge_utils.<method>(deltas, weights, ...)``
    ``(d_out, d_in)``. ``density`` is required by the pruning methods; random
    methods draw their masks from a seed derived from ``(seed, module)``.
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {sorted(MERGE_METHODS)}")
    spec = MERGE_METHODS[method]
    if len(deltas) == 0:
        raise AdapterError(f"module {module}: no deltas to merge")
    shape = tuple(deltas[0].shape)
    for i, d in enumerate(deltas):
        if d.ndim != 2 or tuple(d.shape) != shape:
            raise AdapterError(f"module {module}: delta #{i} has shape {tuple(d.shape)}, expected {shape} (d_out, d_in)")
    w = _weights_tensor(weights, len(deltas), deltas[0], module)
    kwargs = {}
    if spec.uses_density:
        if density is None:
            raise ValueError(f"merge method {method!r} needs density= (fraction of entries kept, in (0, 1])")
        if not 0.0 < float(density) <= 1.0:
            raise ValueError(f"module {module}: density must be in (0, 1], got {density}")
        kwargs["density"] = float(density)
    if spec.sign_election:
        kwargs["majority_sign_method"] = majority_sign_method
    if spec.random:  # the global RNG is process-wide: one seeded draw at a time when modules run side by side
        with _GLOBAL_RNG, seeded_rng(derive_seed(seed, module), deltas[0].device):
            merged = spec.fn(list(deltas), w, **kwargs)
    else:
        merged = spec.fn(list(deltas), w, **kwargs)
    return float(lam) * merged


@dataclass
class MergedLoRA:
    """One merged adapter stored as LoRA factors (scaling 1).

    ``modules`` maps module -> (``lora_a`` ``(rank, d_in)``, ``lora_b``
    ``(d_out, rank)``); ``truncation`` maps module -> ``||dW_merged -
    lora_b @ lora_a||_F^2`` (the energy the rank-``rank`` SVD dropped).
    ``params`` records the method's hyper-parameters and seed.
    """

    method: str
    params: dict
    rank: int
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    truncation: dict[str, float]
    tasks: list[str]
    base_model: str | None = None
    fan_in_fan_out: bool = False  # GPT-2 style Conv1D modules: the export says so in its adapter_config.json

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(lora_a (rank, d_in), lora_b (d_out, rank), 1.0)``."""
        A, B = self.modules[module]
        return A, B, 1.0

    def delta(self, module: str) -> torch.Tensor:
        """Dense merged ``dW`` ``(d_out, d_in)`` at its stored rank (forms the full matrix)."""
        A, B = self.modules[module]
        return B @ A

    @property
    def storage(self) -> int:
        """Numbers stored, counted from the tensors."""
        return int(sum(A.numel() + B.numel() for A, B in self.modules.values()))

    def to_adapter_set(self, name: str | None = None):
        """A one-task :class:`~hydralib.adapters.AdapterSet` (task ``name``, default the method name)."""
        from ..adapters import AdapterSet

        task = name or self.method
        return AdapterSet.from_factors({task: {m: (A, B, 1.0) for m, (A, B) in self.modules.items()}},
                                       base_model=self.base_model, fan_in_fan_out=self.fan_in_fan_out,
                                       metadata={task: {"method": self.method, **self.params}})


def merge_adapters(
    adapters,
    method: str = "task_arithmetic",
    *,
    weights: Mapping[str, float] | Sequence[float] | None = None,
    lam: float = 1.0,
    density: float | None = None,
    rank: int | None = None,
    seed: int = 0,
    modules: Sequence[str] | None = None,
    majority_sign_method: str = "total",
    factored: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> MergedLoRA:
    """Merge every module of an adapter set with a dW-space baseline, store as a rank-``rank`` LoRA.

    ``adapters``: an :class:`~hydralib.adapters.AdapterSet` or ``{task: {module:
    (A, B, scaling)}}``. ``weights``: per task (mapping or sequence; default 1).
    ``rank``: r_m of the stored LoRA (default: the largest task rank at each
    module, as peft's SVD merges do). Per module: linear methods with
    ``factored=True`` take :func:`~.lowrank.lowrank_svd` of
    ``sum_i lam w_i s_i B_i A_i`` (no dense matrix); the others form the dense
    deltas, call :func:`merge_deltas` and then
    :func:`~.lowrank.truncated_svd_dense`. ``device``: where to compute (default CPU).
    """
    from tqdm.auto import tqdm

    from .hydraopt import _as_adapter_set, _module_factors

    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose from {sorted(MERGE_METHODS)}")
    spec = MERGE_METHODS[method]
    aset = _as_adapter_set(adapters)
    if getattr(aset, "magnitudes", None):  # the merged weight needs W0: hydralib.merge.dora
        raise AdapterError("merge_adapters: DoRA adapters: use hydralib.merge.merge_dora(adapters, method, base_model=...)")
    modules = list(modules) if modules is not None else list(aset.modules)
    if isinstance(weights, Mapping):
        missing = [t for t in aset.tasks if t not in weights]
        if missing:
            raise ValueError(f"weights: no weight for tasks {missing[:5]}")
        weights = [float(weights[t]) for t in aset.tasks]
    w = [1.0] * len(aset.tasks) if weights is None else [float(x) for x in weights]
    if len(w) != len(aset.tasks):
        raise ValueError(f"weights: {len(w)} weights for {len(aset.tasks)} tasks")
    device = torch.device(device) if device is not None else torch.device("cpu")

    def merge_module(module: str):
        As, Bs, ss = _module_factors(aset, module, device=device, dtype=dtype)
        check_factors(As, Bs, ss, module, aset.tasks)
        r_m = int(rank) if rank is not None else max(int(A.shape[0]) for A in As)
        if spec.linear and factored:
            svd = lowrank_svd(As, Bs, [float(lam) * wi * si for wi, si in zip(w, ss)], r_m, module)
        else:
            deltas = [s * (B @ A) for A, B, s in zip(As, Bs, ss)]
            merged = merge_deltas(deltas, method, w, lam, density, seed, module, majority_sign_method)
            del deltas
            svd = truncated_svd_dense(merged, r_m, module)
        return svd.lora_a.cpu(), svd.lora_b.cpu(), svd.tail_energy

    out, tails = {}, {}
    with tqdm(total=len(modules), desc=f"merge {method}", disable=not progress, leave=False) as bar:
        # modules side by side on the CPU's cores (hydralib.threads)
        for module, (lora_a, lora_b, tail) in map_modules(merge_module, modules, device=device, progress=bar.update):
            out[module], tails[module] = (lora_a, lora_b), tail
    params = {"lam": float(lam), "weights": w, "seed": int(seed)}
    if spec.uses_density:
        params["density"] = float(density)
    if spec.sign_election:
        params["majority_sign_method"] = majority_sign_method
    ranks = {A.shape[0] for A, _ in out.values()}
    return MergedLoRA(method, params, ranks.pop() if len(ranks) == 1 else -1, out, tails, list(aset.tasks), aset.base_model,
                      aset.fan_in_fan_out)
