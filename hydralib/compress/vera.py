"""Each VeRA adapter in fewer bytes: its two vectors per module under a codec (on the vectors, not on dW).

A VeRA adapter stores, per module, ``lambda_b`` ``(d_out,)`` and ``lambda_d``
``(r,)``; the projections are regenerated from one PRNG key and cost nothing per
task. :func:`quantize_vera` encodes every vector with a codec of
:mod:`~hydralib.compress.codecs` (``int8``: one fp16 scale per vector, or per
group with ``int8:g64``) and returns the decoded set, which runs and saves like
any VeRA set, with the bytes the codec writes.

Example
-------
>>> from hydralib.synthetic import random_vera_adapters
>>> vera = random_vera_adapters(2, {"q": (32, 16)}, rank=8, seed=0)
>>> small, nbytes = quantize_vera(vera, "int8")  # 2 tasks x (32 + 8) codes, one fp16 scale per vector
>>> small.kind, nbytes
('vera', 88)
"""

from __future__ import annotations

from .codecs import decode, encode, encoded_bytes


def quantize_vera(adapters, codec: str = "int8"):
    """``(VeRA AdapterSet with every vector encoded and decoded under codec, bytes the codec stores)``.

    Works on the vectors: each task's ``lambda_b`` ``(d_out,)`` and ``lambda_d`` ``(r,)``
    of every module is one tensor for the codec (``fp16`` keeps 2 bytes a number).
    Refuses a set that is not VeRA (:func:`~hydralib.compress.quantize` takes LoRA).
    """
    from ..merge.vera.sets import _as_vera_set, _source, _vera_set

    aset = _as_vera_set(adapters, "hydralib.compress.quantize_vera")
    vectors, nbytes = {}, 0
    for task in aset.tasks:
        vectors[task] = {}
        for module in aset.modules:
            pair = []
            for v in aset.vera_vectors(task, module):
                pair.append(decode(encode(v.float(), codec), codec, tuple(v.shape)))
                nbytes += encoded_bytes(codec, tuple(v.shape))
            vectors[task][module] = tuple(pair)
    metadata = {t: dict(aset.metadata.get(t, {})) for t in aset.tasks}
    return _vera_set(_source(aset), vectors, metadata), nbytes
