"""VeRA adapter sets as the VeRA merges need them: checks, per-module vectors, and rebuilding sets from vectors.

A VeRA :class:`~hydralib.adapters.AdapterSet` carries, per task and module,
``lambda_b`` ``(d_out,)`` and ``lambda_d`` ``(r,)``, and once the frozen
projections ``vera_A`` ``(r, d_in_max)`` and ``vera_B`` ``(d_out_max, r)``.
:class:`_VeraSource` keeps what a merged result needs to be saved again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch

from ...errors import AdapterError
from .algebra import _F64


@dataclass
class _VeraSource:
    """What a VeRA result needs from its source set to be saved: projections, shapes, peft config."""

    projections: tuple[torch.Tensor, torch.Tensor]
    module_info: dict
    config: dict | None
    base_model: str | None
    stored_dtype: torch.dtype = torch.float32


def _as_vera_set(adapters, where: str):
    from ...adapters import AdapterSet

    if not isinstance(adapters, AdapterSet):
        raise TypeError(f"{where}: adapters must be a VeRA AdapterSet (hydralib.load_adapters), got {type(adapters).__name__}")
    if adapters.kind != "vera":
        raise AdapterError(f"{where}: the adapter set is {adapters.kind!r}; this function merges VeRA adapters "
                           "(use hydralib.merge.merge_adapters / hydraopt for LoRA)")
    if adapters.projections is None:
        raise AdapterError(f"{where}: the VeRA adapter set has no projections")
    return adapters


def _source(aset) -> _VeraSource:
    config = next((aset.configs[t] for t in aset.tasks if t in aset.configs), None)
    stored = aset.stored_dtypes.get(aset.tasks[0], torch.float32)
    return _VeraSource(tuple(p.cpu() for p in aset.projections), {m: aset.module_info(m) for m in aset.modules},
                       copy.deepcopy(config), aset.base_model, stored)


def _vera_set(source: _VeraSource, vectors: Mapping[str, Mapping[str, tuple]], metadata: Mapping[str, dict] | None = None):
    """A VeRA :class:`~hydralib.adapters.AdapterSet` from ``{task: {module: (lambda_b, lambda_d)}}``."""
    from ...adapters import AdapterSet

    tasks = list(vectors)
    modules = next(iter(vectors.values())).keys()
    info = {m: source.module_info[m] for m in modules}
    configs = {t: copy.deepcopy(source.config) for t in tasks} if source.config is not None else None
    clean = {t: {m: (lb.detach().cpu().contiguous(), ld.detach().cpu().contiguous()) for m, (lb, ld) in mods.items()}
             for t, mods in vectors.items()}
    return AdapterSet("vera", tasks, info, vera=clean, projections=source.projections, base_model=source.base_model,
                      metadata=metadata, configs=configs, stored_dtypes={t: source.stored_dtype for t in tasks})


def _module_vectors(aset, module, device=None, dtype=_F64):
    """``(lambda_b (N, d_out), lambda_d (N, r), vera_A (r, d_in), vera_B (d_out, r))`` of ``module``."""
    lbs, lds = zip(*(aset.vera_vectors(t, module) for t in aset.tasks))
    vA, vB = aset.vera_projections(module)
    cast = dict(device=device, dtype=dtype)
    return torch.stack(lbs).to(**cast), torch.stack(lds).to(**cast), vA.to(**cast), vB.to(**cast)


def _task_weight_list(weights, tasks) -> list[float]:
    if isinstance(weights, Mapping):
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"weights: no weight for tasks {missing[:5]}")
        return [float(weights[t]) for t in tasks]
    w = [1.0] * len(tasks) if weights is None else [float(x) for x in weights]
    if len(w) != len(tasks):
        raise ValueError(f"weights: {len(w)} weights for {len(tasks)} tasks")
    return w


def _select_modules(aset, modules):
    modules = list(modules) if modules is not None else list(aset.modules)
    unknown = [m for m in modules if m not in set(aset.modules)]
    if unknown:
        raise ValueError(f"unknown modules {unknown[:3]}; the adapters adapt e.g. {aset.modules[:3]}")
    return modules
