"""HydraOpt bundles and PEFT exports written module by module, for adapter sets larger than memory.

:func:`hydraopt_to_bundle` runs :func:`~hydralib.merge.hydraopt.hydraopt` and
writes each module's shared factor and heads into the bundle's safetensors file
as soon as the module is solved (:class:`~hydralib.peft_io.stream.SafetensorsWriter`);
the result it returns keeps the losses, floors and shapes, with its tensors on
torch's ``meta`` device (no memory). The bundle is the same bytes
:func:`~.result.save_bundle` writes for the in-memory result. With a
:class:`~hydralib.lazy.LazyAdapterSet` the inputs stay on disk too: memory
holds the modules being solved, whatever N.

:func:`export_peft_streamed` writes one PEFT LoRA directory per task from a
bundle on disk, reading one module's shared factor and that task's head at a
time (``safe_open`` slices); the directories are those :func:`~.result.export_peft`
writes. Both are atomic (temporary sibling, then rename).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ...atomic import atomic_dir, atomic_entries, check_writable
from ...errors import AdapterError
from ...peft_io.stream import SafetensorsWriter
from . import hydraopt
from .result import (
    export_targets,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    META_NAME,
    TENSORS_NAME,
    HydraOptResult,
    ModuleResult,
    _expected_shapes,
    _keys,
    _read_meta,
    bundle_meta,
)

__all__ = ["hydraopt_to_bundle", "export_peft_streamed"]


def _on_meta(m: ModuleResult) -> ModuleResult:
    """``m`` with its tensors replaced by ``meta``-device tensors of the same shapes and dtypes."""
    return replace(m, shared=torch.empty(m.shared.shape, dtype=m.shared.dtype, device="meta"),
                   heads=torch.empty(m.heads.shape, dtype=m.heads.dtype, device="meta"))


def hydraopt_to_bundle(adapters, path: str | Path, *, overwrite: bool = False, dtype: torch.dtype | None = None,
                       **options) -> HydraOptResult:
    """Solve HydraOpt on ``adapters`` (an AdapterSet, lazy or eager) and stream the bundle to ``path``.

    ``options`` go to :func:`~hydralib.merge.hydraopt.hydraopt` (``heads``, ``rank``,
    ``side``...). ``dtype``: stored dtype of the bundle's tensors (default: as
    solved, float32). Returns the result with ``meta`` tensors (shapes only).
    """
    check_writable(path, overwrite)
    side, rank = options.get("side", "A"), options.get("rank")
    state: dict = {}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        def write_module(m: ModuleResult) -> ModuleResult:
            if "writer" not in state:  # every shape follows from the first module: K heads, r' per module
                n_heads, stored = int(m.heads.shape[0]), dtype or m.shared.dtype
                specs = {}
                for module in state["modules"]:
                    d_out, d_in = adapters.shape(module)
                    r_out = int(rank) if rank is not None else max(adapters.rank(t, module) for t in adapters.tasks)
                    k_shared, k_heads = _keys(module, side)
                    s_shared, s_heads = _expected_shapes(side, r_out, n_heads, d_out, d_in)
                    specs[k_shared], specs[k_heads] = (stored, s_shared), (stored, s_heads)
                state["dtype"] = stored
                state["writer"] = SafetensorsWriter(tmp / TENSORS_NAME, specs,
                                                    {"format": f"{BUNDLE_FORMAT}/{BUNDLE_VERSION}"})
            k_shared, k_heads = _keys(m.module, side)
            state["writer"].write(k_shared, m.shared)
            state["writer"].write(k_heads, m.heads)
            out = _on_meta(m)
            if dtype is not None:
                out = replace(out, shared=out.shared.to(dtype), heads=out.heads.to(dtype))
            return out

        state["modules"] = list(options.get("modules") or adapters.modules)
        try:
            result = hydraopt(adapters, on_module=write_module, **options)
        except BaseException:
            if "writer" in state:
                state["writer"].abort()
            raise
        digest = state["writer"].close()
        dtype_name = str(state["dtype"]).replace("torch.", "")
        meta = bundle_meta(result, dtype_name, digest)
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return result


def export_peft_streamed(bundle: str | Path, out_dir: str | Path, tasks: Sequence[str] | None = None,
                         overwrite: bool = False, dtype: torch.dtype | None = None) -> dict[str, Path]:
    """One PEFT LoRA directory per task from a bundle on disk, read and written one module at a time.

    The same directories as :func:`~.result.export_peft`: factors ``(A' (r', d_in), B'_g(i) (d_out, r'))``
    for side A, rank r', ``lora_alpha = r'``. Returns ``{task: directory}``.
    """
    from safetensors import safe_open

    from ...lazy import write_streamed_adapter
    from ...peft_io import PREFIX, lora_config_for

    bundle = Path(bundle)
    meta = _read_meta(bundle)
    tasks = list(tasks) if tasks is not None else list(meta["tasks"])
    out_dir = Path(out_dir)
    targets = export_targets(tasks, meta["task_to_head"], out_dir, overwrite)
    side, rank, heads = meta["side"], int(meta["rank"]), list(meta["heads"])
    modules = list(meta["target_modules"])
    tensor_path = bundle / TENSORS_NAME
    dtype = dtype or torch.float32  # as export_peft: the in-memory set it saves is float32
    shapes = {m: (int(meta["modules"][m]["d_out"]), int(meta["modules"][m]["d_in"])) for m in modules}
    empty = {m: (torch.empty(rank, d_in, device="meta"), torch.empty(d_out, rank, device="meta"), 1.0)
             for m, (d_out, d_in) in shapes.items()}
    config = lora_config_for(empty, meta.get("base_model"), fan_in_fan_out=meta.get("fan_in_fan_out") is True)
    specs = {}
    for m, (d_out, d_in) in shapes.items():
        specs[f"{PREFIX}{m}.lora_A.weight"] = (dtype, (rank, d_in))
        specs[f"{PREFIX}{m}.lora_B.weight"] = (dtype, (d_out, rank))

    def task_modules(f, task: str):
        k = heads.index(meta["task_to_head"][task])
        for m in modules:
            k_shared, k_heads = _keys(m, side)
            try:
                shared, head = f.get_tensor(k_shared), f.get_slice(k_heads)[k]
            except Exception as exc:  # a missing key or a changed file
                raise AdapterError(f"{tensor_path}: module {m}: cannot read {k_shared}/{k_heads} "
                                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
            A, B = (shared, head) if side == "A" else (head, shared)
            yield m, (A.to(torch.float32), B.to(torch.float32), 1.0)

    with atomic_entries(out_dir, tasks, overwrite=overwrite) as tmp:
        for task in tasks:
            try:
                with safe_open(str(tensor_path), framework="pt") as f:
                    write_streamed_adapter(tmp / task, config, specs, task_modules(f, task))
            except AdapterError:
                raise
            except Exception as exc:
                raise AdapterError(f"{tensor_path}: corrupt bundle tensors ({str(exc).splitlines()[0]})") from None
    return targets
