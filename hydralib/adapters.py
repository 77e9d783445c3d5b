"""Adapter sets: the LoRA (also DoRA, AdaLoRA) or VeRA adapters of many tasks over one base model.

An :class:`AdapterSet` holds, for every task and every adapted module, the
factors of the update. It is the data model the whole library works on.

* ``factors(task, module) -> (A, B, scaling)`` with A ``(r, d_in)`` and
  B ``(d_out, r)``; the update is ``dW = scaling * B @ A`` ``(d_out, d_in)``.
  For VeRA the factors are ``A = lambda_d[:, None] * vera_A[:, :d_in]`` and
  ``B = lambda_b[:, None] * vera_B[:d_out]`` with scaling 1.
* ``delta(task, module)`` forms the dense ``(d_out, d_in)`` dW, only when asked.
* AdaLoRA directories are read as LoRA factors of the kept rank
  (:mod:`hydralib.peft_io.adalora`); ``adapter_type`` says ``"adalora"``.
* DoRA directories: the factors are the *direction update* ``s B A`` (so every
  analysis sees that), and ``magnitudes[task][module]`` holds m ``(d_out,)``;
  the adapted weight needs the base weights (:mod:`hydralib.merge.dora`).
* Everything else in hydralib works on the factors.

Example
-------
>>> import torch
>>> from hydralib.adapters import AdapterSet
>>> A, B = torch.randn(4, 16), torch.randn(8, 4)
>>> aset = AdapterSet.from_factors({"t": {"layers.0.q_proj": (A, B, 2.0)}})
>>> aset.tasks, aset.modules, aset.shape("layers.0.q_proj"), aset.rank("t", "layers.0.q_proj")
(['t'], ['layers.0.q_proj'], (8, 16), 4)
>>> torch.allclose(aset.delta("t", "layers.0.q_proj"), 2.0 * B @ A)
True
"""

from __future__ import annotations

import copy
import glob
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from . import peft_io
from .errors import AdapterError

Factors = tuple[torch.Tensor, torch.Tensor, float]


@dataclass(frozen=True)
class ModuleInfo:
    """Shape of one adapted module: ``d_out`` x ``d_in``; ``fan_in_fan_out`` for GPT-2 style Conv1D."""

    name: str
    d_out: int
    d_in: int
    fan_in_fan_out: bool = False


def expand_sources(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """Directories from paths and glob patterns, in the order given (each pattern sorted)."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    out: list[Path] = []
    for source in sources:
        text = str(source)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise AdapterError(f"{text}: the pattern matches no adapter directory")
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(text))
    if not out:
        raise AdapterError("load_adapters: no adapter directories given")
    return out


class AdapterSet:
    """The adapters of several tasks over one base model (LoRA or VeRA).

    Build one with :func:`load_adapters` (PEFT directories) or
    :meth:`AdapterSet.from_factors` (tensors). Attributes: ``kind``
    (``"lora"``/``"vera"``), ``tasks``, ``modules``, ``metadata[task]`` (dict,
    e.g. ``application``, ``language``, ``seed``), ``base_model``.
    """

    def __init__(
        self,
        kind: str,
        tasks: Sequence[str],
        module_info: Mapping[str, ModuleInfo],
        lora: Mapping[str, Mapping[str, Factors]] | None = None,
        vera: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
        projections: tuple[torch.Tensor, torch.Tensor] | None = None,
        base_model: str | None = None,
        metadata: Mapping[str, dict] | None = None,
        configs: Mapping[str, dict] | None = None,
        sources: Mapping[str, Path] | None = None,
        stored_dtypes: Mapping[str, torch.dtype] | None = None,
        magnitudes: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        adapter_type: str | None = None,
    ):
        if kind not in ("lora", "vera"):
            raise ValueError(f"AdapterSet: kind must be 'lora' or 'vera', got {kind!r}")
        self.kind = kind
        self.tasks = list(tasks)
        self._info = dict(module_info)
        self.modules = sorted(self._info)
        self._lora = {t: dict(m) for t, m in (lora or {}).items()}
        self._vera = {t: dict(m) for t, m in (vera or {}).items()}
        self.projections = projections
        self.base_model = base_model
        self.metadata = {t: dict((metadata or {}).get(t, {})) for t in self.tasks}
        self.configs = {t: dict(c) for t, c in (configs or {}).items()}
        self.sources = dict(sources or {})
        self.stored_dtypes = dict(stored_dtypes or {})
        # DoRA: {task: {module: m (d_out,)}}; the factors are then the direction update (see hydralib.merge.dora)
        self.magnitudes = {t: dict(m) for t, m in (magnitudes or {}).items()}
        self.adapter_type = adapter_type or ("dora" if self.magnitudes else kind)  # lora, adalora, dora, vera

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_factors(
        cls,
        factors: Mapping[str, Mapping[str, Factors]],
        base_model: str | None = None,
        metadata: Mapping[str, dict] | None = None,
        fan_in_fan_out: bool = False,
    ) -> "AdapterSet":
        """A LoRA set from ``{task: {module: (A (r, d_in), B (d_out, r), scaling)}}``."""
        if not factors:
            raise AdapterError("AdapterSet.from_factors: no tasks given")
        info: dict[str, ModuleInfo] = {}
        clean: dict[str, dict[str, Factors]] = {}
        reference_task = next(iter(factors))
        for task, modules in factors.items():
            if set(modules) != set(factors[reference_task]):
                raise AdapterError(
                    f"task {task}: modules differ from task {reference_task}: "
                    f"{_describe_difference(set(modules), set(factors[reference_task]))}"
                )
            clean[task] = {}
            for module, (A, B, scaling) in modules.items():
                A, B = torch.as_tensor(A), torch.as_tensor(B)
                if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
                    raise AdapterError(
                        f"task {task}: module {module}: A {tuple(A.shape)} and B {tuple(B.shape)} "
                        "are not (r, d_in) and (d_out, r)"
                    )
                for name, t in (("A", A), ("B", B)):
                    if not t.dtype.is_floating_point:
                        raise AdapterError(f"task {task}: module {module}: {name} has dtype "
                                           f"{str(t.dtype).removeprefix('torch.')}; factors must be floating point")
                    if not torch.isfinite(t).all():
                        raise AdapterError(f"task {task}: module {module}: {name} has NaN/Inf values")
                if not _finite_number(scaling):
                    raise AdapterError(f"task {task}: module {module}: scaling {scaling!r} is not a finite number")
                shape = ModuleInfo(module, int(B.shape[0]), int(A.shape[1]), fan_in_fan_out)
                if module in info and info[module] != shape:
                    raise AdapterError(
                        f"task {task}: module {module}: shape {shape.d_out}x{shape.d_in} disagrees with "
                        f"{info[module].d_out}x{info[module].d_in} of the other tasks"
                    )
                info[module] = shape
                clean[task][module] = (A, B, float(scaling))
        return cls("lora", list(factors), info, lora=clean, base_model=base_model, metadata=metadata)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        ranks = sorted({self.rank(t, m) for t in self.tasks for m in self.modules})
        return (
            f"AdapterSet(kind={self.kind!r}, tasks={len(self.tasks)}, modules={len(self.modules)}, "
            f"ranks={ranks}, base_model={self.base_model!r})"
        )

    def _check(self, task: str, module: str | None = None) -> None:
        if task not in self.metadata:
            raise KeyError(f"unknown task {task!r}; tasks: {self.tasks[:8]}{'...' if len(self.tasks) > 8 else ''}")
        if module is not None and module not in self._info:
            raise KeyError(f"unknown module {module!r}; e.g. {self.modules[:3]}")

    def module_info(self, module: str) -> ModuleInfo:
        self._check(self.tasks[0], module)
        return self._info[module]

    @property
    def fan_in_fan_out(self) -> bool:
        """Whether any module is GPT-2 style Conv1D (weights stored ``(d_in, d_out)``): exports record it."""
        return any(self._info[m].fan_in_fan_out for m in self.modules)

    def shape(self, module: str) -> tuple[int, int]:
        """``(d_out, d_in)`` of ``module``."""
        info = self.module_info(module)
        return info.d_out, info.d_in

    def rank(self, task: str, module: str) -> int:
        """Rank r of ``task`` at ``module`` (VeRA: the shared projection rank)."""
        self._check(task, module)
        if self.kind == "lora":
            return int(self._lora[task][module][0].shape[0])
        return int(self._vera[task][module][1].shape[0])

    def scaling(self, task: str, module: str) -> float:
        self._check(task, module)
        return self._lora[task][module][2] if self.kind == "lora" else 1.0

    def factors(self, task: str, module: str) -> Factors:
        """``(A (r, d_in), B (d_out, r), scaling)`` with ``dW = scaling * B @ A``."""
        self._check(task, module)
        if self.kind == "lora":
            return self._lora[task][module]
        vA, vB = self.vera_projections(module)
        lb, ld = self._vera[task][module]
        return ld[:, None] * vA, lb[:, None] * vB, 1.0

    def delta(self, task: str, module: str) -> torch.Tensor:
        """Dense dW ``(d_out, d_in)`` of ``task`` at ``module`` (forms the full matrix)."""
        A, B, scaling = self.factors(task, module)
        return scaling * (B @ A)

    def vera_vectors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """VeRA's trainable ``(lambda_b (d_out,), lambda_d (r,))``."""
        self._check(task, module)
        if self.kind != "vera":
            raise TypeError("vera_vectors: this is a LoRA adapter set")
        return self._vera[task][module]

    def vera_projections(self, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared frozen projections sliced to ``module``: ``(vera_A (r, d_in), vera_B (d_out, r))``."""
        if self.kind != "vera" or self.projections is None:
            raise TypeError("vera_projections: this adapter set has no VeRA projections")
        d_out, d_in = self.shape(module)
        vA, vB = self.projections
        return vA[:, :d_in], vB[:d_out, :]

    def parameters(self, task: str) -> dict[str, torch.Tensor]:
        """The stored (trainable) tensors of ``task``, keyed ``module.lora_A`` etc."""
        self._check(task)
        out = {}
        for module in self.modules:
            if self.kind == "lora":
                A, B, _ = self._lora[task][module]
                out[f"{module}.lora_A"], out[f"{module}.lora_B"] = A, B
                if self.magnitudes:
                    out[f"{module}.lora_magnitude_vector"] = self.magnitudes[task][module]
            else:
                lb, ld = self._vera[task][module]
                out[f"{module}.vera_lambda_b"], out[f"{module}.vera_lambda_d"] = lb, ld
        return out

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters(self.tasks[0]).values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters(self.tasks[0]).values())).device

    # ------------------------------------------------------------------ transforms

    def _map_tensors(self, fn) -> "AdapterSet":
        lora = {t: {m: (fn(A), fn(B), s) for m, (A, B, s) in mods.items()} for t, mods in self._lora.items()}
        vera = {t: {m: (fn(lb), fn(ld)) for m, (lb, ld) in mods.items()} for t, mods in self._vera.items()}
        projections = tuple(fn(p) for p in self.projections) if self.projections is not None else None
        return AdapterSet(
            self.kind, self.tasks, self._info, lora=lora, vera=vera, projections=projections,
            base_model=self.base_model, metadata=self.metadata, configs=self.configs,
            sources=self.sources, stored_dtypes=self.stored_dtypes,
            magnitudes={t: {m: fn(v) for m, v in mods.items()} for t, mods in self.magnitudes.items()},
            adapter_type=self.adapter_type,
        )

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "AdapterSet":
        """A copy on ``device`` and/or in floating ``dtype`` (the original is unchanged)."""
        return self._map_tensors(lambda t: t.to(device=device, dtype=dtype))

    def subset(self, tasks: Sequence[str]) -> "AdapterSet":
        """The adapters of ``tasks`` only, in that order."""
        for task in tasks:
            self._check(task)
        keep = list(tasks)
        return AdapterSet(
            self.kind, keep, self._info,
            lora={t: self._lora[t] for t in keep if t in self._lora},
            vera={t: self._vera[t] for t in keep if t in self._vera},
            projections=self.projections, base_model=self.base_model,
            metadata={t: self.metadata[t] for t in keep},
            configs={t: self.configs[t] for t in keep if t in self.configs},
            sources={t: self.sources[t] for t in keep if t in self.sources},
            stored_dtypes={t: self.stored_dtypes[t] for t in keep if t in self.stored_dtypes},
            magnitudes={t: self.magnitudes[t] for t in keep if t in self.magnitudes}, adapter_type=self.adapter_type,
        )

    # ------------------------------------------------------------------ saving

    def save_peft(
        self,
        task: str,
        directory: str | Path,
        overwrite: bool = False,
        dtype: torch.dtype | None = None,
    ) -> Path:
        """Write ``task`` as a PEFT adapter directory that stock ``peft`` loads.

        A task read from a PEFT directory keeps its original ``adapter_config.json``
        (so the round trip is lossless); a task built from tensors gets a
        ``LoraConfig`` whose ``rank_pattern``/``alpha_pattern`` reproduce every
        module's rank and scaling. ``dtype`` defaults to the dtype the task was
        stored in (float32 for tensors built in memory). Written atomically;
        an existing directory is replaced only with ``overwrite=True``.
        """
        self._check(task)
        dtype = dtype or self.stored_dtypes.get(task, torch.float32)
        if self.kind == "lora":
            factors = self._lora[task]
            config = self.configs.get(task)
            if config is None:
                fan = self.fan_in_fan_out
                config = peft_io.lora_config_for(factors, self.base_model, fan_in_fan_out=fan)
                config["use_dora"] = bool(self.magnitudes)
            tensors = peft_io.lora_tensors(factors, dtype)
            if self.magnitudes:
                tensors.update(peft_io.dora_tensors(self.magnitudes[task], dtype))
        else:
            config = self.configs.get(task)
            if config is None:
                raise AdapterError(f"task {task}: a VeRA task needs its peft VeraConfig to be saved")
            projections = self.projections if config.get("save_projection", True) else None
            tensors = peft_io.vera_tensors(self._vera[task], projections, dtype)
        return peft_io.write_adapter(directory, config, tensors, overwrite=overwrite)


def _finite_number(value) -> bool:
    """A real number (Python, numpy or a one-element tensor; not a string), finite."""
    if isinstance(value, (str, bytes, bool)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _describe_difference(got: set, expected: set) -> str:
    extra, missing = sorted(got - expected), sorted(expected - got)
    parts = []
    if missing:
        parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''} ({len(missing)})")
    if extra:
        parts.append(f"extra {extra[:3]}{'...' if len(extra) > 3 else ''} ({len(extra)})")
    return ", ".join(parts)


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` of every ``nn.Linear`` and GPT-2 ``Conv1D`` layer of a torch model."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.out_features, module.in_features)
        elif type(module).__name__ == "Conv1D":  # GPT-2 stores (d_in, d_out)
            shapes[name] = (int(module.weight.shape[1]), int(module.weight.shape[0]))
    return shapes


def task_names(paths: Sequence[Path], tasks: Sequence[str] | None = None) -> list[str]:
    """The task name of each adapter directory (default: the directory's name); one per path, all distinct."""
    tasks = list(tasks) if tasks is not None else [p.name for p in paths]
    if len(tasks) != len(paths):
        raise AdapterError(f"load_adapters: {len(tasks)} task names for {len(paths)} adapter directories")
    seen: dict[str, Path] = {}
    for task, path in zip(tasks, paths):
        if task in seen:
            raise AdapterError(f"{path}: duplicate task name {task!r} (also {seen[task]}); pass tasks=[...] to name them")
        seen[task] = path
    return tasks


def load_adapters(
    sources: str | Path | Iterable[str | Path],
    tasks: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    module_shapes: Mapping[str, tuple[int, int]] | None = None,
    base_model: torch.nn.Module | None = None,
) -> AdapterSet:
    """Read PEFT LoRA or VeRA adapter directories into one validated :class:`AdapterSet`.

    Parameters
    ----------
    sources: directories or glob patterns (``"adapters/*"``), one adapter per directory.
    tasks: task names in the order of the expanded sources (default: directory names).
    metadata: ``{task: {"application": ..., "language": ...}}`` attached to the set.
    dtype, device: where the factors live (files may be stored in half precision).
    module_shapes, base_model: only for VeRA, to know each module's ``d_in``
        (``{module: (d_out, d_in)}`` or the torch model itself). Without them,
        every module's ``d_in`` is taken as the width of the shared ``vera_A``,
        which is right for attention projections of equal width.

    Every adapter must be of the same kind and base model and adapt the same
    modules with the same shapes; task names must be unique. Errors name the
    file and the module.
    """
    paths = expand_sources(sources)
    tasks = task_names(paths, tasks)

    raws = [peft_io.read_adapter(p) for p in paths]
    _check_compatible(raws)
    first = raws[0]
    shapes_hint = dict(module_shapes or {})
    if base_model is not None:
        shapes_hint.update(linear_shapes(base_model))

    info: dict[str, ModuleInfo] = {}
    lora, vera = {}, {}
    for task, raw in zip(tasks, raws):
        if raw.kind in ("lora", "dora"):
            lora[task] = {
                m: (A.to(device=device, dtype=dtype), B.to(device=device, dtype=dtype), s)
                for m, (A, B, s) in raw.lora.items()
            }
            for m, (A, B, _) in raw.lora.items():
                shape = ModuleInfo(m, int(B.shape[0]), int(A.shape[1]), raw.fan_in_fan_out)
                if m in info and (info[m].d_out, info[m].d_in) != (shape.d_out, shape.d_in):
                    raise AdapterError(
                        f"{raw.path}: module {m}: shape {shape.d_out}x{shape.d_in} disagrees with "
                        f"{info[m].d_out}x{info[m].d_in} in {first.path}"
                    )
                info[m] = shape
        else:
            vera[task] = {m: (lb.to(device=device, dtype=dtype), ld.to(device=device, dtype=dtype))
                          for m, (lb, ld) in raw.vera.items()}

    projections = None
    if first.kind == "vera":
        projections, info = _vera_projections_and_shapes(raws, shapes_hint)
        projections = tuple(p.to(device=device, dtype=dtype) for p in projections)

    types = sorted({raw.adapter_type for raw in raws})
    return AdapterSet(
        "lora" if first.kind == "dora" else first.kind, tasks, info, lora=lora, vera=vera, projections=projections,
        base_model=first.base_model, metadata=metadata,
        configs={t: copy.deepcopy(r.config) for t, r in zip(tasks, raws)},
        sources=dict(zip(tasks, paths)),
        stored_dtypes={t: r.stored_dtype for t, r in zip(tasks, raws)},
        magnitudes={t: {m: v.to(device=device, dtype=dtype) for m, v in r.magnitudes.items()}
                    for t, r in zip(tasks, raws) if r.magnitudes},
        adapter_type="+".join(types),
    )


def _check_compatible(raws: list[peft_io.RawAdapter]) -> None:
    """Same kind, base model and modules for every adapter of a set."""
    first = raws[0]
    for raw in raws[1:]:
        if raw.kind != first.kind:
            raise AdapterError(f"{raw.path}: a {raw.kind} adapter cannot join a set of {first.kind} adapters ({first.path})")
        if raw.base_model != first.base_model:
            raise AdapterError(
                f"{raw.path}: made for base model {raw.base_model!r}, but {first.path} for {first.base_model!r}"
            )
        if set(raw.modules) != set(first.modules):
            raise AdapterError(
                f"{raw.path}: target modules differ from {first.path}: "
                f"{_describe_difference(set(raw.modules), set(first.modules))}"
            )
        if raw.kind == "vera":
            for key in ("projection_prng_key", "r"):
                if raw.config.get(key) != first.config.get(key):
                    raise AdapterError(
                        f"{raw.path}: VeRA {key}={raw.config.get(key)!r} differs from {first.config.get(key)!r} "
                        f"in {first.path}; all VeRA adapters of a set must share their projections"
                    )
            for m in first.modules:
                if raw.vera[m][0].shape != first.vera[m][0].shape:
                    raise AdapterError(
                        f"{raw.path}: module {m}: vera_lambda_b {tuple(raw.vera[m][0].shape)} disagrees "
                        f"with {tuple(first.vera[m][0].shape)} in {first.path}"
                    )


def _vera_projections_and_shapes(raws, shapes_hint):
    """Shared VeRA projections (read from a file, else regenerated from the PRNG key) and module shapes."""
    first = raws[0]
    r = int(first.config["r"])
    saved = next((raw for raw in raws if raw.projections is not None), None)
    d_out = {m: int(lb.shape[0]) for m, (lb, _) in first.vera.items()}
    if saved is not None:
        vA, vB = saved.projections
        max_in = int(vA.shape[1])
    elif shapes_hint:
        max_in = max(shapes_hint[m][1] for m in first.modules if m in shapes_hint)
        vA = vB = None
    else:
        raise AdapterError(
            f"{first.path}: the VeRA projections are not stored (save_projection=False); pass base_model= or "
            "module_shapes= so they can be regenerated from projection_prng_key"
        )
    info = {}
    assumed = []
    for m in first.modules:
        if m in shapes_hint:
            if shapes_hint[m][0] != d_out[m]:
                raise AdapterError(
                    f"{first.path}: module {m}: vera_lambda_b has {d_out[m]} entries but the base model's "
                    f"layer has d_out={shapes_hint[m][0]}"
                )
            d_in = int(shapes_hint[m][1])
        else:
            d_in = max_in
            assumed.append(m)
        info[m] = ModuleInfo(m, d_out[m], d_in, bool(first.config.get("fan_in_fan_out", False)))
    if assumed and shapes_hint:
        warnings.warn(f"{first.path}: d_in of {len(assumed)} VeRA modules taken as {max_in} (not in base_model)")
    if vA is None:
        vA, vB = peft_io.vera_projections(first.config.get("projection_prng_key", 0), r,
                                          max(d_out.values()), max_in)
    return (vA, vB), info
