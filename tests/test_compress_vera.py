"""Per-adapter quantization of VeRA vectors (hydralib.compress.quantize_vera)."""

from __future__ import annotations

import doctest

import pytest
import torch

from hydralib.compress import encode, quantize_vera
from hydralib.errors import AdapterError
from hydralib.synthetic import random_vera_adapters, synthetic_adapters, synthetic_tasks

MODULES = {"q": (48, 32), "v": (24, 32)}


def test_doctest_example():
    import hydralib.compress.vera as module

    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("codec", ["fp16", "int8", "int4", "int4:g8"])
def test_every_vector_is_within_its_codec_bound_and_bytes_are_counted(codec):
    vera = random_vera_adapters(3, MODULES, rank=8, seed=1)
    small, nbytes = quantize_vera(vera, codec)
    assert small.kind == "vera" and small.tasks == vera.tasks and small.modules == vera.modules
    expected_bytes = 0
    for t in vera.tasks:
        for m in vera.modules:
            for ours, theirs in zip(small.vera_vectors(t, m), vera.vera_vectors(t, m)):
                stored = encode(theirs.float(), codec)
                expected_bytes += sum(x.numel() * x.element_size() for x in stored.values())
                if codec == "fp16":
                    assert torch.equal(ours, theirs.half().float())
                else:
                    assert float((ours - theirs).abs().max()) <= float(stored["scales"].float().max()) / 2 + 1e-7
            assert torch.allclose(small.vera_projections(m)[0], vera.vera_projections(m)[0])
    assert nbytes == expected_bytes  # what the codec writes, tensor by tensor


def test_fewer_bits_fewer_bytes_more_error():
    vera = random_vera_adapters(2, MODULES, rank=8, seed=2)
    sizes, errors = [], []
    for codec in ("fp16", "int8", "int4", "int2"):
        small, nbytes = quantize_vera(vera, codec)
        sizes.append(nbytes)
        errors.append(sum(float((small.delta(t, m) - vera.delta(t, m)).pow(2).sum())
                          for t in vera.tasks for m in vera.modules))
    assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)


def test_a_lora_set_is_refused_with_the_function_named():
    _, metadata = synthetic_tasks(["a"], ["en", "de"])
    lora = synthetic_adapters(MODULES, metadata)
    with pytest.raises(AdapterError, match="quantize_vera: the adapter set is 'lora'"):
        quantize_vera(lora, "int8")
