"""Safetensors files written one tensor at a time: :class:`SafetensorsWriter`.

``safetensors.torch.save`` needs every tensor in memory at once; a bundle of
40 Llama-3.1-8B adapters is gigabytes. When the names, dtypes and shapes are
known in advance (they are for a merge: they follow from the module shapes,
the rank and the number of heads), the header and every tensor's offset can be
written first and each tensor's bytes put in place as soon as it is computed,
in any order. The file is byte for byte the one ``safetensors.torch.save``
writes for the same tensors and metadata (same header, same layout: tensors
ordered by dtype then name), so a streamed bundle and an in-memory one are
the same file. :meth:`SafetensorsWriter.close` checks that every declared
tensor was written and returns the file's sha256.

Example
-------
>>> import os, tempfile, torch
>>> from safetensors.torch import save
>>> t = {"b": torch.ones(2, 3), "a": torch.zeros(4, dtype=torch.float16)}
>>> path = os.path.join(tempfile.mkdtemp(), "x.safetensors")
>>> w = SafetensorsWriter(path, {k: (v.dtype, tuple(v.shape)) for k, v in t.items()}, {"format": "demo"})
>>> w.write("a", t["a"]); w.write("b", t["b"])
>>> digest = w.close()
>>> open(path, "rb").read() == save(t, metadata={"format": "demo"})
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Mapping

import torch

__all__ = ["SafetensorsWriter", "DTYPE_CODES", "file_sha256"]

#: torch dtype -> safetensors dtype code
DTYPE_CODES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64", torch.int64: "I64",
}
# safetensors lays tensors out by dtype (in this order, last first), then by name
_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64",
          "U64"]
_CHUNK = 1 << 24
_PENDING_MAX = 1 << 28  # bytes held back for an in-order hash


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class SafetensorsWriter:
    """Write a safetensors file whose tensors (``{name: (dtype, shape)}``) are declared up front.

    ``write(name, tensor)`` puts one tensor (any device/dtype; cast to the
    declared dtype, shape checked) at its place; tensors may come in any order.
    ``close()`` returns the sha256 of the file and refuses (ValueError) a file
    with tensors never written. Memory: one tensor at a time.
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        for name, (dtype, _) in specs.items():
            if dtype not in DTYPE_CODES:
                raise ValueError(f"SafetensorsWriter: tensor {name}: dtype {dtype} is not supported")
        order = sorted(specs, key=lambda k: (-_ORDER.index(DTYPE_CODES[specs[k][0]]), k))
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        self._places: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        offset = 0
        for name in order:
            dtype, shape = specs[name]
            shape = tuple(int(s) for s in shape)
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._places[name] = (dtype, shape, offset, size)
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        self._start = 8 + len(text)
        self._written: set[str] = set()
        self._order = order
        self._fh = open(self.path, "wb")
        self._fh.write(len(text).to_bytes(8, "little") + text)
        self._fh.truncate(self._start + offset)
        self._digest: hashlib._Hash | None = hashlib.sha256(len(text).to_bytes(8, "little") + text)
        self._hashed = 0  # tensors of ``order`` hashed so far (in place order)
        self._pending: dict[str, bytes] = {}

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Put ``tensor`` (declared as ``name``) at its offset."""
        if name not in self._places:
            raise ValueError(f"{self.path}: tensor {name} was not declared")
        if name in self._written:
            raise ValueError(f"{self.path}: tensor {name} written twice")
        dtype, shape, offset, size = self._places[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{self.path}: tensor {name} has shape {tuple(tensor.shape)}, declared {shape}")
        data = tensor.detach().to("cpu", dtype).contiguous()
        raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
        self._fh.seek(self._start + offset)
        self._fh.write(raw)
        self._written.add(name)
        if self._digest is None:
            return
        self._pending[name] = raw
        if sum(len(v) for v in self._pending.values()) > _PENDING_MAX:  # far out of order: hash the file at close
            self._digest, self._pending = None, {}
            return
        while self._hashed < len(self._order) and self._order[self._hashed] in self._pending:  # hash in file order
            self._digest.update(self._pending.pop(self._order[self._hashed]))
            self._hashed += 1

    def close(self) -> str:
        """Finish the file; returns its sha256. Every declared tensor must have been written."""
        missing = [k for k in self._order if k not in self._written]
        self._fh.close()
        if missing:
            raise ValueError(f"{self.path}: tensors {missing[:3]} were declared but never written")
        return self._digest.hexdigest() if self._digest is not None else file_sha256(self.path)

    def abort(self) -> None:
        """Close without checks (the caller discards the file)."""
        self._fh.close()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
