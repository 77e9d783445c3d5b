"""Compression written module by module: :func:`quantize_to_file`, for adapter sets larger than memory.

:func:`~.quantization.quantize` keeps every task's decoded factors in memory
(N adapters in float32) before :meth:`~.container.CompressedAdapters.save`
encodes them. :func:`quantize_to_file` writes the same
``compressed.safetensors`` (the same bytes) one module at a time: it stacks
that module's factors over the tasks (``lora_A`` ``(N, r, d_in)``, ``lora_B``
``(N, d_out, r)`` with the scaling folded in), encodes them with the codec,
decodes and encodes again (what ``save`` does with a built set), and puts the
parts in place with :class:`~hydralib.peft_io.stream.SafetensorsWriter`. With
a :class:`~hydralib.lazy.LazyAdapterSet` memory holds one module of N tasks.
Atomic (temporary sibling, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_dir, check_writable
from ..peft_io.stream import SafetensorsWriter
from .codecs import decode, encode
from .container import AXES, FORMAT, TENSORS_NAME, VERSION

__all__ = ["quantize_to_file"]


def _stack(aset, tasks, module: str) -> dict[str, torch.Tensor]:
    """``{"lora_A": (N, r, d_in), "lora_B": (N, d_out, r)}`` of one module, as :func:`~.container.stack_per_task`."""
    triples = [aset.factors(t, module) for t in tasks]
    r = max(int(A.shape[0]) for A, _, _ in triples)
    d_out, d_in = aset.shape(module)
    As, Bs = torch.zeros(len(tasks), r, d_in), torch.zeros(len(tasks), d_out, r)
    for i, (A, B, s) in enumerate(triples):
        As[i, : A.shape[0]] = A.float()
        Bs[i, :, : B.shape[1]] = float(s) * B.float()
    return {"lora_A": As, "lora_B": Bs}


def quantize_to_file(aset, path: str | Path, codec: str = "int4", tasks=None, overwrite: bool = False,
                     progress: bool = False) -> Path:
    """Quantize every adapter of ``aset`` under ``codec`` into ``path/compressed.safetensors``, module by module.

    The file :func:`~.quantization.quantize` ``(aset, codec, tasks).save(path)`` writes, read back by
    :func:`~.container.load_compressed`. Returns the file's path.
    """
    from tqdm.auto import tqdm

    check_writable(path, overwrite)
    tasks = list(tasks or aset.tasks)
    codecs = {"lora_A": codec, "lora_B": codec}
    specs, shapes, factor_shapes = {}, {}, {}
    parts_of_shape: dict[tuple, dict] = {}
    for module in aset.modules:  # every part's dtype and shape, from one dry run per distinct shape
        d_out, d_in = aset.shape(module)
        r = max(aset.rank(t, module) for t in tasks)
        shapes[module] = (d_out, d_in)
        factor_shapes[module] = {"lora_A": (len(tasks), r, d_in), "lora_B": (len(tasks), d_out, r)}
        for name, shape in factor_shapes[module].items():
            key = (name, shape)
            if key not in parts_of_shape:
                parts = encode(torch.zeros(shape), codec, AXES[name])
                parts_of_shape[key] = {p: (t.dtype, tuple(t.shape)) for p, t in parts.items()}
            for part, spec in parts_of_shape[key].items():
                specs[f"{module}.{name}.{part}"] = spec
    meta = {"format": FORMAT, "version": VERSION, "method": codec, "layout": "per_task", "side": "A", "tasks": tasks,
            "entries": tasks, "mapping": {t: t for t in tasks}, "codecs": codecs, "base_model": aset.base_model,
            "modules": {m: {"d_out": s[0], "d_in": s[1], "factors": {n: list(x) for n, x in factor_shapes[m].items()}}
                        for m, s in shapes.items()},
            "info": {}}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        with SafetensorsWriter(tmp / TENSORS_NAME, specs, {FORMAT: json.dumps(meta, sort_keys=True)}) as writer:
            for module in tqdm(aset.modules, desc=f"quantize {codec}", disable=not progress, leave=False):
                for name, x in _stack(aset, tasks, module).items():
                    axis = AXES[name]
                    try:
                        decoded = decode(encode(x, codec, axis), codec, tuple(x.shape), axis)
                    except ValueError as exc:
                        raise ValueError(f"module {module}: {name}: {exc}") from None
                    for part, t in encode(decoded, codec, axis).items():
                        writer.write(f"{module}.{name}.{part}", t)
            writer.close()
    return Path(path) / TENSORS_NAME
