"""Keeping N adapters in fewer bytes without merging them: compress each adapter, or share a basis.

Families (each registered in :data:`COMPRESSORS` with its paper, like the merges):

* ``truncate`` (:mod:`.truncation`): each adapter cut to rank r'' by the SVD of its dW, on the factors;
* ``quantize`` (:mod:`.quantization`): the stored factors as b-bit integer codes with fp16 scales per
  rank component or per group (:mod:`.codecs`);
* ``compeft`` (:mod:`.signs`): ComPEFT's top-k signs and one scale per tensor;
* ``jd`` (:mod:`.jd`): Compress then Serve, a shared U, V per module and a per-task Sigma_i.

Compositions (:mod:`.compose`): a HydraOpt result or a truncation stored with an integer codec.
Every result is a :class:`CompressedAdapters`: one safetensors file, whose size is the storage.

Example
-------
>>> from hydralib.synthetic import random_lora_factors
>>> from hydralib.adapters import AdapterSet
>>> aset = AdapterSet.from_factors(random_lora_factors(3, {"layers.0.q_proj": (16, 12)}, rank=2, seed=0))
>>> small = compress_adapters(aset, "quantize", codec="int8")
>>> round(relative_loss(small, aset), 4) < 1e-3, small.layout
(True, 'per_task')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .codecs import decode, encode, encoded_bytes, pack_bits, parse_codec, quantize_codes, unpack_bits
from .signs import compeft
from .compose import from_hydraopt, from_merged
from .container import TENSORS_NAME, CompressedAdapters, adapter_file_bytes, load_compressed, with_magnitudes
from .jd import compress_then_serve, fit_module
from .quantization import quantize, relative_loss, update_energy
from .truncation import truncate, truncate_factors
from .vera import quantize_vera


@dataclass(frozen=True)
class Compressor:
    """One family: ``fn(aset, **knobs) -> CompressedAdapters``, its knobs and its reference."""

    name: str
    fn: Callable
    knobs: str
    paper: str


COMPRESSORS = {
    "truncate": Compressor("truncate", truncate, "rank, codec", "Eckart-Young truncated SVD of each dW"),
    "quantize": Compressor("quantize", quantize, "codec (int<b>[:g<G>])", "absmax integer codes per rank component"),
    "compeft": Compressor("compeft", compeft, "density", "Yadav et al. 2023, arXiv:2311.13171"),
    "jd": Compressor("jd", compress_then_serve, "c, diagonal, codec",
                     "Compress then Serve, Brüel-Gabrielsson et al. 2025, arXiv:2407.00066"),
}


def compress_adapters(aset, method: str, **knobs) -> CompressedAdapters:
    """Compress every adapter of ``aset`` with the family ``method`` of :data:`COMPRESSORS`.

    DoRA adapters: the family compresses the direction updates ``s B A``; each task's magnitude vector
    ``(d_out,)`` is stored beside them in fp16 (:func:`~.container.with_magnitudes`)."""
    if method not in COMPRESSORS:
        raise ValueError(f"unknown compression method {method!r}; choose from {sorted(COMPRESSORS)}")
    if getattr(aset, "magnitudes", None):  # DoRA: compress the direction updates, keep each magnitude in fp16
        from ..merge.dora import directions

        cset = with_magnitudes(COMPRESSORS[method].fn(directions(aset), **knobs), aset.magnitudes)
    else:
        cset = COMPRESSORS[method].fn(aset, **knobs)
    if aset.fan_in_fan_out:  # exports say so (GPT-2 Conv1D)
        cset.info["fan_in_fan_out"] = True
    return cset


__all__ = ["quantize_vera", "COMPRESSORS", "TENSORS_NAME", "Compressor", "CompressedAdapters", "compress_adapters", "compeft", "compress_then_serve",
           "decode", "encode", "encoded_bytes", "fit_module", "adapter_file_bytes", "from_hydraopt", "from_merged",
           "load_compressed", "pack_bits", "parse_codec", "quantize", "quantize_codes", "relative_loss", "truncate",
           "truncate_factors", "unpack_bits", "update_energy", "with_magnitudes"]
