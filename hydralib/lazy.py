"""Out-of-core adapter sets: :class:`LazyAdapterSet` reads a module's factors from disk only when they are used.

:func:`load_adapters_lazy` opens every ``adapter_model.safetensors`` with
``safetensors.safe_open`` and reads its header (keys, dtypes, shapes; checked
like :func:`~hydralib.adapters.load_adapters` checks them), nothing more.
``factors(task, module)`` reads that module's ``lora_A`` ``(r, d_in)`` and
``lora_B`` ``(d_out, r)`` then, checks them (finite, not too large) and
returns them in the set's dtype and device, with nothing kept: memory holds
the modules being worked on, not the N adapters. Everything that works module
by module through :class:`~hydralib.adapters.AdapterSet`'s interface (HydraOpt,
the dW baselines, compression, the analyses) runs on it unchanged and gives
the same bits as on the eager set, because the same stored tensors are cast
the same way. ``save_peft`` streams one module at a time
(:class:`~hydralib.peft_io.stream.SafetensorsWriter`), atomically as before.

:func:`open_adapters` chooses: lazy when the adapters' files together are
larger than ``threshold`` bytes (default :data:`LAZY_THRESHOLD` = 1 GiB, or
``$HYDRALIB_LAZY_THRESHOLD``), eager below. VeRA sets (small vectors) are always
read eagerly.

A file that changes on disk while the set is open (truncated, rewritten) gives
a one-line :class:`~hydralib.errors.AdapterError` naming the file and module
at the next read.

Example
-------
>>> import tempfile, torch
>>> from hydralib.synthetic import random_lora_factors, write_peft_dirs
>>> from hydralib.adapters import load_adapters
>>> root = tempfile.mkdtemp()
>>> dirs = write_peft_dirs(random_lora_factors(3, {"layers.0.q_proj": (12, 10)}, rank=2, seed=0), {}, root)
>>> lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
>>> lazy.tasks == eager.tasks, lazy.shape("layers.0.q_proj"), lazy.rank(lazy.tasks[0], "layers.0.q_proj")
(True, (12, 10), 2)
>>> all(torch.equal(x, y) for x, y in zip(lazy.factors("task0", "layers.0.q_proj")[:2],
...                                       eager.factors("task0", "layers.0.q_proj")[:2]))
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from . import peft_io
from .adapters import AdapterSet, Factors, ModuleInfo, _describe_difference, expand_sources, load_adapters, task_names
from .atomic import atomic_dir
from .errors import AdapterError
from .peft_io.lazy import LazyAdapter, open_adapter
from .peft_io.stream import SafetensorsWriter

__all__ = ["LazyAdapterSet", "load_adapters_lazy", "open_adapters", "adapters_bytes", "lazy_threshold",
           "LAZY_THRESHOLD"]

#: Adapters larger than this on disk (bytes, all files together) are read lazily by :func:`open_adapters`.
LAZY_THRESHOLD = 1 << 30


class LazyAdapterSet(AdapterSet):
    """An :class:`~hydralib.adapters.AdapterSet` of LoRA adapters whose factors stay on disk until used.

    Same interface; ``factors``/``delta``/``parameters`` read from the files at
    each call (nothing is cached). ``dtype``/``device``: what factors are cast to.
    """

    def __init__(self, tasks: Sequence[str], module_info: Mapping[str, ModuleInfo], files: Mapping[str, LazyAdapter],
                 *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 base_model: str | None = None, metadata: Mapping[str, dict] | None = None,
                 configs: Mapping[str, dict] | None = None, sources: Mapping[str, Path] | None = None,
                 stored_dtypes: Mapping[str, torch.dtype] | None = None):
        super().__init__("lora", tasks, module_info, base_model=base_model, metadata=metadata, configs=configs,
                         sources=sources, stored_dtypes=stored_dtypes)
        self._files = dict(files)
        self._dtype = dtype
        self._device = torch.device(device)
        self.lazy = True

    def __repr__(self) -> str:
        return "Lazy" + super().__repr__()

    # ------------------------------------------------------------------ queries from the headers

    def rank(self, task: str, module: str) -> int:
        self._check(task, module)
        return self._files[task].modules[module][2]

    def scaling(self, task: str, module: str) -> float:
        self._check(task, module)
        return self._files[task].modules[module][5]

    def factors(self, task: str, module: str) -> Factors:
        """``(A (r, d_in), B (d_out, r), scaling)`` read from ``task``'s file now, in the set's dtype and device."""
        self._check(task, module)
        A, B, s = self._files[task].read_module(module, self._dtype if self._device.type == "cpu" else None)
        return A.to(device=self._device, dtype=self._dtype), B.to(device=self._device, dtype=self._dtype), s

    def parameters(self, task: str) -> dict[str, torch.Tensor]:
        """All stored tensors of ``task`` (reads the whole adapter: one task in memory)."""
        out = {}
        for module in self.modules:
            A, B, _ = self.factors(task, module)
            out[f"{module}.lora_A"], out[f"{module}.lora_B"] = A, B
        return out

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def file_bytes(self) -> int:
        """Bytes of the adapters' weight files on disk."""
        return sum(f.file_bytes() for f in self._files.values())

    # ------------------------------------------------------------------ transforms (still lazy)

    def _like(self, tasks: Sequence[str], dtype: torch.dtype | None = None, device=None) -> "LazyAdapterSet":
        keep = list(tasks)
        return LazyAdapterSet(
            keep, self._info, {t: self._files[t] for t in keep}, dtype=dtype or self._dtype,
            device=device if device is not None else self._device, base_model=self.base_model,
            metadata={t: self.metadata[t] for t in keep}, configs={t: self.configs[t] for t in keep if t in self.configs},
            sources={t: self.sources[t] for t in keep if t in self.sources},
            stored_dtypes={t: self.stored_dtypes[t] for t in keep if t in self.stored_dtypes},
        )

    def _map_tensors(self, fn) -> AdapterSet:
        raise TypeError("LazyAdapterSet: tensors stay on disk; use .to(device, dtype) or load_adapters() for an eager set")

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LazyAdapterSet":
        """A lazy set whose factors are cast to ``dtype`` and moved to ``device`` when read."""
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"LazyAdapterSet.to: dtype must be floating point, got {dtype}")
        return self._like(self.tasks, dtype, device)

    def subset(self, tasks: Sequence[str]) -> "LazyAdapterSet":
        for task in tasks:
            self._check(task)
        return self._like(tasks)

    def materialize(self) -> AdapterSet:
        """The eager :class:`~hydralib.adapters.AdapterSet` of the same adapters (reads everything)."""
        factors = {t: {m: self.factors(t, m) for m in self.modules} for t in self.tasks}
        out = AdapterSet("lora", self.tasks, self._info, lora=factors, base_model=self.base_model,
                         metadata=self.metadata, configs=self.configs, sources=self.sources,
                         stored_dtypes=self.stored_dtypes)
        return out

    # ------------------------------------------------------------------ saving, streamed

    def save_peft(self, task: str, directory: str | Path, overwrite: bool = False,
                  dtype: torch.dtype | None = None) -> Path:
        """Write ``task`` as a PEFT directory, one module at a time (same files as the eager set's ``save_peft``)."""
        self._check(task)
        dtype = dtype or self.stored_dtypes.get(task, torch.float32)
        config = self.configs.get(task)
        if config is None:  # pragma: no cover - sets from files always carry their config
            raise AdapterError(f"task {task}: no adapter config to save")
        specs = {}
        for module in self.modules:
            d_out, d_in = self.shape(module)
            r = self.rank(task, module)
            specs[f"{peft_io.PREFIX}{module}.lora_A.weight"] = (dtype, (r, d_in))
            specs[f"{peft_io.PREFIX}{module}.lora_B.weight"] = (dtype, (d_out, r))
        return write_streamed_adapter(directory, config, specs,
                                      ((m, self.factors(task, m)) for m in self.modules), overwrite=overwrite)


def write_streamed_adapter(directory: str | Path, config: dict, specs: Mapping[str, tuple[torch.dtype, tuple]],
                           modules: Iterable[tuple[str, Factors]], overwrite: bool = False) -> Path:
    """A PEFT LoRA directory written module by module: ``specs`` declares every tensor (peft's keys), ``modules``
    yields ``(module, (A (r, d_in), B (d_out, r), scaling))``; atomic (temporary sibling, then rename)."""
    import json

    from .peft_io.config import CONFIG_NAME, WEIGHTS_NAME
    from .peft_io.write import _json_ready

    with atomic_dir(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(_json_ready(config), indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
        with SafetensorsWriter(tmp / WEIGHTS_NAME, specs, {"format": "pt"}) as writer:
            for module, (A, B, _) in modules:
                writer.write(f"{peft_io.PREFIX}{module}.lora_A.weight", A)
                writer.write(f"{peft_io.PREFIX}{module}.lora_B.weight", B)
            writer.close()
    return Path(directory)


def adapters_bytes(sources: str | Path | Iterable[str | Path]) -> int:
    """Bytes of the ``adapter_model.safetensors`` files of ``sources`` (directories or glob patterns)."""
    total = 0
    for path in expand_sources(sources):
        weights = Path(path) / peft_io.WEIGHTS_NAME
        if weights.is_file():
            total += weights.stat().st_size
    return total


def lazy_threshold() -> int:
    """Bytes above which :func:`open_adapters` reads lazily: ``$HYDRALIB_LAZY_THRESHOLD`` or :data:`LAZY_THRESHOLD`."""
    text = os.environ.get("HYDRALIB_LAZY_THRESHOLD", "").strip()
    if not text:
        return LAZY_THRESHOLD
    try:
        value = int(float(text))
    except ValueError:
        raise AdapterError(f"$HYDRALIB_LAZY_THRESHOLD={text!r}: expected a number of bytes") from None
    if value < 0:
        raise AdapterError(f"$HYDRALIB_LAZY_THRESHOLD={text!r}: must be >= 0")
    return value


def load_adapters_lazy(
    sources: str | Path | Iterable[str | Path],
    tasks: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LazyAdapterSet:
    """PEFT LoRA directories as a :class:`LazyAdapterSet` (headers read and checked now, tensors when used).

    Same arguments and checks as :func:`~hydralib.adapters.load_adapters` (LoRA only).
    """
    paths = expand_sources(sources)
    tasks = task_names(paths, tasks)
    files = [open_adapter(p) for p in paths]
    first = files[0]
    info: dict[str, ModuleInfo] = {}
    for f in files:
        if f.base_model != first.base_model:
            raise AdapterError(f"{f.path}: made for base model {f.base_model!r}, but {first.path} for {first.base_model!r}")
        if set(f.modules) != set(first.modules):
            raise AdapterError(f"{f.path}: target modules differ from {first.path}: "
                               f"{_describe_difference(set(f.modules), set(first.modules))}")
        for m, (_, _, _, d_out, d_in, _) in f.modules.items():
            if m in info and (info[m].d_out, info[m].d_in) != (d_out, d_in):
                raise AdapterError(f"{f.path}: module {m}: shape {d_out}x{d_in} disagrees with "
                                   f"{info[m].d_out}x{info[m].d_in} in {first.path}")
            info[m] = ModuleInfo(m, d_out, d_in, f.fan_in_fan_out)
    import copy

    return LazyAdapterSet(
        tasks, info, dict(zip(tasks, files)), dtype=dtype, device=device, base_model=first.base_model,
        metadata=metadata, configs={t: copy.deepcopy(f.config) for t, f in zip(tasks, files)},
        sources=dict(zip(tasks, paths)), stored_dtypes={t: f.stored_dtype for t, f in zip(tasks, files)},
    )


def _eager_only(path: Path) -> bool:
    """VeRA, AdaLoRA and DoRA directories: the lazy reader takes plain LoRA only, so these load eagerly."""
    try:
        config = peft_io.read_config(path)
    except AdapterError:
        return False
    return str(config.get("peft_type", "")).upper() in ("VERA", "ADALORA") or config.get("use_dora") is True


def open_adapters(
    sources: str | Path | Iterable[str | Path],
    tasks: Sequence[str] | None = None,
    metadata: Mapping[str, dict] | None = None,
    *,
    lazy: bool | None = None,
    threshold: int | None = None,
    **kwargs,
) -> AdapterSet:
    """An adapter set from PEFT directories, lazy or eager.

    ``lazy=None``: lazy when the weight files together exceed ``threshold`` bytes
    (default :func:`lazy_threshold`) and the adapters are LoRA; ``True``/``False`` force it
    (``True`` on VeRA adapters reads them eagerly). ``kwargs`` go to the loader
    (``dtype``, ``device``; ``module_shapes``/``base_model`` for VeRA).
    """
    paths = expand_sources(sources)
    if lazy is None:
        limit = lazy_threshold() if threshold is None else int(threshold)
        lazy = adapters_bytes(paths) > limit
    if lazy and paths and Path(paths[0]).is_dir() and not _eager_only(Path(paths[0])):
        lazy_kwargs = {k: v for k, v in kwargs.items() if k in ("dtype", "device")}
        return load_adapters_lazy(paths, tasks, metadata, **lazy_kwargs)
    return load_adapters(paths, tasks, metadata, **kwargs)
