"""How one stored tensor becomes bytes: half precision, integer codes with scales, or ComPEFT's signs.

A *codec* turns a float tensor into the named tensors that are written to disk
(``encode``) and back (``decode``); every byte of the file comes from these
tensors, so storage is what :func:`encoded_bytes` counts and what the file holds.

* ``"fp16"``: the tensor in half precision (2 bytes a number).
* ``"int<b>"`` / ``"int<b>:g<G>"``, b in 2..8: symmetric absmax quantization
  along one axis (the long one of a factor: a row of lora_a, a column of
  lora_b). Each group of ``G`` consecutive numbers along that axis (the whole
  axis without ``:g``) has one fp16 scale ``absmax / q`` with ``q = 2^(b-1) - 1``;
  codes are ``round(x / scale)`` in ``[-q, q]`` (so int2 is ternary), packed
  ``b`` bits each. Error bound: ``|x - decode(x)| <= scale / 2`` per entry.
* ``"compeft:<density>"``: ComPEFT (Yadav et al. 2023, arXiv:2311.13171). Per
  tensor (one task's factor), keep the ``ceil(density * numel)`` entries of
  largest magnitude, store their positions (a bitmask, 1 bit a number), their
  signs (1 bit each) and one fp16 scale; decode is ``scale * sign`` at the kept
  positions. The paper tunes the scale as ``alpha * std`` on validation data;
  here it is the least-squares choice ``mean |kept entries|`` (no data needed).

Stacked tensors ``(N, ...)`` hold one slice per task; ComPEFT scales are per slice.

Example
-------
>>> x = torch.linspace(-1, 1, 12).reshape(2, 6)
>>> stored = encode(x, "int4", axis=1)
>>> sorted(stored), stored["codes"].dtype
(['codes', 'scales'], torch.uint8)
>>> bool((decode(stored, "int4", x.shape, axis=1) - x).abs().max() <= stored["scales"].float().max() / 2)
True
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

_INT = re.compile(r"^int([2-8])(?::g([1-9][0-9]*))?$")
_COMPEFT = re.compile(r"^compeft:(0?\.[0-9]+|1(?:\.0*)?)$")


def parse_codec(codec: str) -> tuple[str, dict]:
    """``"int4:g64" -> ("int", {"bits": 4, "group": 64})``; ``"compeft:0.1" -> ("compeft", {"density": 0.1})``."""
    if codec == "fp16":
        return "fp16", {}
    m = _INT.match(codec)
    if m:
        return "int", {"bits": int(m.group(1)), "group": int(m.group(2)) if m.group(2) else None}
    m = _COMPEFT.match(codec)
    if m and 0 < float(m.group(1)) <= 1:
        return "compeft", {"density": float(m.group(1))}
    raise ValueError(f"unknown codec {codec!r}: expected 'fp16', 'int<2..8>[:g<group>]' or 'compeft:<density in (0, 1]>'")


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ints ``values`` (any shape, each ``< 2**bits``) packed ``bits`` bits each into a flat uint8 tensor
    of ``ceil(numel * bits / 8)`` bytes (little-endian bit order within each value)."""
    v = values.reshape(-1).to(torch.int64).cpu().numpy().astype(np.uint8)
    planes = (v[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` values (int64)."""
    flat = np.unpackbits(packed.cpu().numpy(), bitorder="little", count=count * bits).reshape(count, bits)
    # each row of bits (bits <= 8) packs back into one byte: the value (about 8x faster than shifting and summing)
    return torch.from_numpy(np.packbits(flat, axis=1, bitorder="little").reshape(count).astype(np.int64))


def _rows(x: torch.Tensor, axis: int, group: int | None) -> tuple[torch.Tensor, int]:
    """``x`` with ``axis`` moved last and cut into groups: ``(n_groups_total, G)`` (zero padded) and the axis length."""
    moved = x.movedim(axis, -1)
    length = moved.shape[-1]
    g = group or length
    pad = (-length) % g
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    return moved.reshape(-1, g), length


def _unrows(rows: torch.Tensor, shape: tuple[int, ...], axis: int, length: int) -> torch.Tensor:
    moved_shape = list(shape)
    moved_shape.append(moved_shape.pop(axis))
    full = rows.reshape(*moved_shape[:-1], -1)[..., :length]
    return full.movedim(-1, axis)


def quantize_codes(x: torch.Tensor, bits: int, axis: int = -1, group: int | None = None):
    """Symmetric absmax quantization of ``x`` along ``axis``: ``(codes int64 in [-q, q], fp16 scales (n_groups, 1))``,
    computed with the fp16-rounded scale, so that ``codes * scale`` is exactly what is decoded."""
    q = 2 ** (bits - 1) - 1
    rows, _ = _rows(x.detach().float(), axis % x.ndim, group)
    scales = (rows.abs().amax(1, keepdim=True) / q).to(torch.float16)
    s = scales.float()
    codes = torch.where(s > 0, torch.round(rows / torch.where(s > 0, s, 1.0)), 0.0).clamp(-q, q).to(torch.int64)
    return codes, scales


FP16_MAX = float(torch.finfo(torch.float16).max)


def encode(x: torch.Tensor, codec: str, axis: int = -1) -> dict[str, torch.Tensor]:
    """The tensors that store ``x`` under ``codec`` (see the module docstring); ``axis`` is the quantization axis.

    ValueError when ``x`` is not finite or a stored half-precision number (a value
    under ``fp16``, a scale under the others) would overflow float16 (65504).
    """
    stored = _encode(x, codec, axis)
    for part, t in stored.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            biggest = float(x.detach().abs().max()) if x.numel() else 0.0
            raise ValueError(f"codec {codec}: {part} overflow float16 (values up to {biggest:.4g}; float16 "
                             f"holds up to {FP16_MAX:.0f}); an integer codec such as int8 stores them")
    return stored


def _encode(x: torch.Tensor, codec: str, axis: int) -> dict[str, torch.Tensor]:
    if not torch.isfinite(x).all():
        raise ValueError(f"codec {codec}: the tensor has NaN/Inf values")
    kind, opts = parse_codec(codec)
    if kind == "fp16":
        return {"values": x.detach().to("cpu", torch.float16).contiguous()}
    if kind == "int":
        codes, scales = quantize_codes(x, opts["bits"], axis, opts["group"])
        q = 2 ** (opts["bits"] - 1) - 1
        return {"codes": pack_bits(codes + q, opts["bits"]), "scales": scales.reshape(-1).contiguous()}
    slices = x.detach().float().cpu().reshape(x.shape[0] if x.ndim > 2 else 1, -1)
    k = max(1, math.ceil(opts["density"] * slices.shape[1]))
    top = slices.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(slices, dtype=torch.bool).scatter_(1, top, True)
    kept = slices[mask].reshape(slices.shape[0], k)  # row-major order of the kept positions
    scales = kept.abs().mean(1).to(torch.float16)
    return {"mask": pack_bits(mask.to(torch.int64), 1), "signs": pack_bits((kept > 0).to(torch.int64), 1),
            "scales": scales.contiguous()}


def decode(stored: dict[str, torch.Tensor], codec: str, shape: tuple[int, ...], axis: int = -1) -> torch.Tensor:
    """The float32 tensor of ``shape`` that ``stored`` (from :func:`encode`) represents."""
    kind, opts = parse_codec(codec)
    shape = tuple(int(d) for d in shape)
    if kind == "fp16":
        return stored["values"].float().reshape(shape)
    if kind == "int":
        axis = axis % len(shape)
        length = shape[axis]
        g = opts["group"] or length
        n_rows = math.prod(shape) // length * math.ceil(length / g)
        q = 2 ** (opts["bits"] - 1) - 1
        codes = unpack_bits(stored["codes"], opts["bits"], n_rows * g).reshape(n_rows, g) - q
        return _unrows(codes.float() * stored["scales"].float()[:, None], shape, axis, length)
    n_slices = shape[0] if len(shape) > 2 else 1
    per = math.prod(shape) // n_slices
    mask = unpack_bits(stored["mask"], 1, n_slices * per).reshape(n_slices, per).bool()
    k = max(1, math.ceil(opts["density"] * per))
    signs = unpack_bits(stored["signs"], 1, n_slices * k).reshape(n_slices, k).float() * 2 - 1
    out = torch.zeros(n_slices, per)
    out[mask] = (signs * stored["scales"].float()[:, None]).reshape(-1)
    return out.reshape(shape)


def encoded_bytes(codec: str, shape: tuple[int, ...], axis: int = -1) -> int:
    """Bytes of the tensors :func:`encode` writes for a tensor of ``shape`` (the formula; tests check it on files)."""
    kind, opts = parse_codec(codec)
    numel = math.prod(shape)
    if kind == "fp16":
        return 2 * numel
    if kind == "int":
        length = shape[axis % len(shape)]
        g = opts["group"] or length
        groups = numel // length * math.ceil(length / g)
        return math.ceil(groups * g * opts["bits"] / 8) + 2 * groups
    n_slices = shape[0] if len(shape) > 2 else 1
    k = max(1, math.ceil(opts["density"] * (numel // n_slices)))
    return math.ceil(numel / 8) + math.ceil(n_slices * k / 8) + 2 * n_slices
