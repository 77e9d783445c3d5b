"""Storage accounting: parameters and bytes of adapters and of merged results.

Counts are of the numbers that must be stored (the factors, not the dense dW):

* one LoRA module of rank r: ``r * (d_in + d_out)``;
* one VeRA module: ``d_out + r`` (lambda_b and lambda_d; the projections are
  regenerated from the PRNG key, so they cost nothing per task);
* a HydraOpt result, A shared, K heads, rank r': ``r' * d_in + K * r' * d_out``
  per module (B shared: ``r' * d_out + K * r' * d_in``);
* one merged LoRA of rank r_m: ``r_m * (d_in + d_out)``.

"Relative storage" divides by the storage of keeping every adapter of a set.

Example
-------
>>> lora_module_params(d_out=576, d_in=576, rank=8)
9216
>>> hydra_module_params(d_out=576, d_in=576, rank=8, heads=40)
188928
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from .adapters import AdapterSet


def bytes_per_param(dtype: torch.dtype | str) -> int:
    """Bytes of one number stored in ``dtype`` (``torch.float16`` or ``"float16"``)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.empty((), dtype=dtype).element_size()


def lora_module_params(d_out: int, d_in: int, rank: int) -> int:
    """Numbers stored for one LoRA module: A ``(rank, d_in)`` and B ``(d_out, rank)``."""
    return rank * (d_in + d_out)


def vera_module_params(d_out: int, rank: int) -> int:
    """Numbers stored for one VeRA module: lambda_b ``(d_out,)`` and lambda_d ``(rank,)``."""
    return d_out + rank


def hydra_module_params(d_out: int, d_in: int, rank: int, heads: int, side: str = "A") -> int:
    """Numbers stored for one HydraOpt module: the shared factor once plus ``heads`` other factors."""
    if side == "A":
        return rank * d_in + heads * rank * d_out
    if side == "B":
        return rank * d_out + heads * rank * d_in
    raise ValueError(f"side must be 'A' or 'B', got {side!r}")


def adapter_params(aset: "AdapterSet", task: str) -> int:
    """Numbers stored for one task's adapter (its trainable tensors; DoRA: with its magnitude vectors)."""
    total = 0
    for module in aset.modules:
        d_out, d_in = aset.shape(module)
        r = aset.rank(task, module)
        total += lora_module_params(d_out, d_in, r) if aset.kind == "lora" else vera_module_params(d_out, r)
        total += d_out if getattr(aset, "magnitudes", None) else 0  # DoRA: the magnitude vector
    return total


def set_params(aset: "AdapterSet") -> int:
    """Numbers stored to keep every adapter of the set."""
    return sum(adapter_params(aset, t) for t in aset.tasks)


def merged_lora_params(shapes: Mapping[str, tuple[int, int]], rank: int) -> int:
    """Numbers stored for one merged LoRA of ``rank`` over modules ``{name: (d_out, d_in)}``."""
    return sum(lora_module_params(d_out, d_in, rank) for d_out, d_in in shapes.values())


def hydra_params(shapes: Mapping[str, tuple[int, int]], rank: int, heads: int, side: str = "A") -> int:
    """Numbers stored for a HydraOpt result over modules ``{name: (d_out, d_in)}``."""
    return sum(hydra_module_params(d_out, d_in, rank, heads, side) for d_out, d_in in shapes.values())


def module_shapes(aset: "AdapterSet") -> dict[str, tuple[int, int]]:
    """``{module: (d_out, d_in)}`` of an adapter set."""
    return {m: aset.shape(m) for m in aset.modules}


@dataclass(frozen=True)
class StorageRow:
    """One line of a storage table."""

    label: str
    params: int
    bytes: int
    relative: float  # params / params of keeping every adapter of the reference set


def storage_table(
    aset: "AdapterSet",
    extra: Mapping[str, int] | None = None,
    dtype: torch.dtype | str | None = None,
) -> list[StorageRow]:
    """Per-task rows, the "all adapters" row, and ``extra`` rows (label -> params).

    Bytes use ``dtype`` (default: the dtype the first adapter was stored in on
    disk, float32 for adapters built in memory).
    """
    dtype = dtype or aset.stored_dtypes.get(aset.tasks[0], torch.float32)
    size = bytes_per_param(dtype)
    total = set_params(aset)
    rows = [StorageRow(t, p, p * size, p / total) for t in aset.tasks for p in [adapter_params(aset, t)]]
    rows.append(StorageRow(f"all {len(aset.tasks)} adapters", total, total * size, 1.0))
    for label, params in (extra or {}).items():
        rows.append(StorageRow(label, int(params), int(params) * size, params / total))
    return rows


def rows_as_dicts(rows: list[StorageRow]) -> list[dict]:
    """JSON-ready form of a storage table."""
    return [asdict(r) for r in rows]


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
