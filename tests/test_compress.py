"""Per-adapter compression and the shared-basis family: invariants, error bounds, and bytes against the file.

Every family is checked on the factors against a dense reference computed
independently (the updates ``s B A`` formed explicitly).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hydralib import compress
from hydralib.adapters import AdapterSet
from hydralib.compress import codecs, jd
from hydralib.errors import AdapterError
from hydralib.synthetic import random_lora_factors

SHAPES = {"layers.0.q_proj": (24, 20), "layers.0.k_proj": (8, 20), "layers.1.o_proj": (20, 24)}


def _aset(n=4, rank=3, seed=0):
    return AdapterSet.from_factors(random_lora_factors(n, SHAPES, rank=rank, seed=seed), base_model="tiny")


def _dense_loss(cset, aset):
    num = den = 0.0
    for t in aset.tasks:
        for m in aset.modules:
            A, B, s = aset.factors(t, m)
            a, b, _ = cset.task_factors(t, m)
            dw = s * B.double() @ A.double()
            num += float(((b.double() @ a.double()) - dw).pow(2).sum())
            den += float(dw.pow(2).sum())
    return num / den


# ----------------------------------------------------------------------------- codecs


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(1, 300), seed=st.integers(0, 10**6))
def test_pack_bits_round_trips_and_uses_the_bytes_it_says(bits, n, seed):
    values = torch.randint(0, 2 ** bits, (n,), generator=torch.Generator().manual_seed(seed))
    packed = codecs.pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(codecs.unpack_bits(packed, bits, n), values)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [None, 7, 16])
def test_quantization_error_is_within_half_a_step_of_its_scale(bits, group):
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(bits)) * 0.05
    codec = f"int{bits}" + (f":g{group}" if group else "")
    stored = codecs.encode(x, codec, axis=-1)
    back = codecs.decode(stored, codec, x.shape, axis=-1)
    g = group or 40
    scales = stored["scales"].float().reshape(3, 5, -1)  # one per group along the last axis
    step = scales.repeat_interleave(g, dim=-1)[..., :40]
    assert bool(((back - x).abs() <= step / 2 + 1e-7).all())
    q = 2 ** (bits - 1) - 1  # the absmax of each group is representable: its error is the fp16 rounding of the scale
    assert float((back - x).abs().max()) <= float(step.max()) / 2 + 1e-7
    assert stored["codes"].numel() == math.ceil(3 * 5 * math.ceil(40 / g) * g * bits / 8) and q >= 1


def test_int8_of_a_smooth_tensor_is_within_one_percent():
    t = torch.linspace(0, 6.28, 512)
    x = torch.stack([torch.sin(t + k) for k in range(8)])
    back = codecs.decode(codecs.encode(x, "int8", axis=-1), "int8", x.shape, axis=-1)
    assert float((back - x).norm() / x.norm()) < 1e-2


def test_quantization_axis_matters_for_lora_b_columns():
    x = torch.randn(30, 4)  # a lora_b: one scale per column (rank component)
    stored = codecs.encode(x, "int4", axis=0)
    assert stored["scales"].numel() == 4
    assert codecs.decode(stored, "int4", x.shape, axis=0).shape == x.shape


def test_compeft_keeps_k_signs_with_the_least_squares_scale():
    x = torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(1))
    stored = codecs.encode(x, "compeft:0.2", axis=-1)
    back = codecs.decode(stored, "compeft:0.2", x.shape)
    for i in range(2):
        flat, rec = x[i].reshape(-1), back[i].reshape(-1)
        top = flat.abs().topk(20).indices
        assert int((rec != 0).sum()) == 20 and set(rec.nonzero().reshape(-1).tolist()) == set(top.tolist())
        assert torch.equal(torch.sign(rec[top]), torch.sign(flat[top]))
        assert float(rec.abs().max()) == pytest.approx(float(flat[top].abs().mean()), rel=1e-3)


@pytest.mark.parametrize("codec", ["fp16", "int8", "int3:g5", "int2", "compeft:0.3", "compeft:1"])
@pytest.mark.parametrize("shape,axis", [((4, 9), -1), ((3, 7, 5), -2), ((11, 6), 0)])
def test_encoded_bytes_formula_equals_the_tensors_written(codec, shape, axis):
    x = torch.randn(*shape)
    stored = codecs.encode(x, codec, axis)
    assert sum(t.numel() * t.element_size() for t in stored.values()) == codecs.encoded_bytes(codec, shape, axis)


@pytest.mark.parametrize("codec", ["int1", "int9", "int4:g0", "compeft:0", "compeft:1.5", "fp8", "int4:64"])
def test_bad_codec_names_are_refused(codec):
    with pytest.raises(ValueError, match="codec"):
        codecs.parse_codec(codec)


def test_values_float16_cannot_hold_are_refused_and_an_integer_codec_stores_them():
    x = torch.tensor([[1.0, -7e4, 3.0]])
    for codec, big in (("fp16", x), ("compeft:0.5", torch.tensor([[7e4, -8e4]]))):  # a value; a scale
        with pytest.raises(ValueError, match="overflow float16"):
            codecs.encode(big, codec, axis=1)
    assert torch.allclose(codecs.decode(codecs.encode(x, "int8", axis=1), "int8", x.shape, axis=1), x, rtol=0.01, atol=300)
    with pytest.raises(ValueError, match="NaN/Inf"):
        codecs.encode(torch.tensor([[1.0, float("nan")]]), "int8", axis=1)
    # through a family: the error names the module and the factor
    aset = AdapterSet.from_factors({"t": {"layers.0.q_proj": (torch.ones(1, 4) * 300, torch.ones(3, 1) * 300, 1.0)}})
    with pytest.raises(ValueError, match=r"module layers\.0\.q_proj: lora_B: codec fp16"):
        compress.truncate(aset, rank=1)
    assert compress.truncate(aset, rank=1, codec="int8").to_adapter_set().delta("t", "layers.0.q_proj").max() > 8e4


# ----------------------------------------------------------------------------- families


def test_truncation_to_the_full_rank_returns_the_adapter():
    aset = _aset()
    full = compress.truncate(aset, rank=3)
    assert _dense_loss(full, aset) < 1e-6  # fp16 storage of the factors: rounding only
    exact = compress.truncation.truncate_factors(*aset.factors(aset.tasks[0], aset.modules[0]), rank=5)
    A, B, s = aset.factors(aset.tasks[0], aset.modules[0])
    assert torch.allclose(exact[1] @ exact[0], s * B @ A, atol=1e-5) and exact[2] < 1e-8


def test_truncation_error_is_the_dropped_singular_values():
    aset = _aset()
    A, B, s = aset.factors(aset.tasks[1], aset.modules[0])
    a, b, err = compress.truncate_factors(A, B, s, rank=1)
    sv = torch.linalg.svdvals((s * B @ A).double())
    assert err == pytest.approx(float((sv[1:] ** 2).sum()), rel=1e-4)
    assert float((b @ a - s * B @ A).pow(2).sum()) == pytest.approx(err, rel=1e-3)


def test_relative_loss_on_the_factors_equals_the_dense_one():
    aset = _aset()
    for cset in (compress.quantize(aset, "int3"), compress.truncate(aset, 1), compress.compeft(aset, 0.3),
                 compress.compress_then_serve(aset, 5, diagonal=True)):
        assert compress.relative_loss(cset, aset) == pytest.approx(_dense_loss(cset, aset), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("diagonal", [False, True])
def test_compress_then_serve_with_c_at_least_the_sum_of_ranks_is_exact(diagonal):
    aset = _aset(n=3, rank=2)  # sum of ranks 6 <= min(d_out, d_in) = 8
    cset = compress.compress_then_serve(aset, c=6, diagonal=diagonal)
    assert cset.info["fit_relative_loss"] < 1e-10
    assert _dense_loss(cset, aset) < 1e-6  # fp16 storage of U, V, sigma


@pytest.mark.parametrize("diagonal", [False, True])
def test_compress_then_serve_loss_never_increases_and_is_the_true_loss(diagonal):
    aset = _aset(n=5, rank=3, seed=3)
    m = aset.modules[0]
    triples = [aset.factors(t, m) for t in aset.tasks]
    fit = jd.fit_module([a for a, _, _ in triples], [b for _, b, _ in triples], [s for *_, s in triples], c=4,
                        diagonal=diagonal, iters=25, tol=0.0)
    assert len(fit.losses) > 2
    assert all(b <= a + 1e-9 * fit.energy for a, b in zip(fit.losses, fit.losses[1:]))
    dense = 0.0
    for i, (A, B, s) in enumerate(triples):
        sig = torch.diag(fit.sigma[i]) if diagonal else fit.sigma[i]
        dense += float((fit.U @ sig @ fit.V.T - s * B.double() @ A.double()).pow(2).sum())
    assert fit.losses[-1] == pytest.approx(dense, rel=1e-8, abs=1e-10)


def test_compress_then_serve_refuses_a_basis_larger_than_the_module():
    aset = _aset()
    triples = [aset.factors(t, "layers.0.k_proj") for t in aset.tasks]
    with pytest.raises(ValueError, match="c must be"):
        jd.fit_module([a for a, _, _ in triples], [b for _, b, _ in triples], [1.0] * 4, c=9)


def test_hydraopt_and_merges_go_through_the_same_container():
    from hydralib.merge import hydraopt, merge_adapters

    aset = _aset()
    result = hydraopt(aset, heads="task", rank=12, progress=False)  # r' = N r: exact
    assert compress.relative_loss(compress.from_hydraopt(result), aset) < 1e-6
    q = compress.from_hydraopt(result, "int4")
    assert q.codecs == {"shared": "int4", "heads": "int4"} and 0 < compress.relative_loss(q, aset) < 0.1
    merged = merge_adapters(aset, "task_arithmetic", weights=[1.0] + [0.0] * 3, rank=3, progress=False)
    one = compress.from_merged(merged.to_adapter_set("merged"), aset.tasks, "ta")
    assert one.entries == ["merged"] and compress.relative_loss(one, aset, tasks=aset.tasks[:1]) < 1e-6


def test_registry_names_every_family():
    assert set(compress.COMPRESSORS) == {"truncate", "quantize", "compeft", "jd"}
    with pytest.raises(ValueError, match="unknown compression method"):
        compress.compress_adapters(_aset(), "zip")


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("make", [
    lambda a: compress.quantize(a, "int4:g8"), lambda a: compress.truncate(a, 2, codec="int3"),
    lambda a: compress.compeft(a, 0.25), lambda a: compress.compress_then_serve(a, 4, diagonal=False),
])
def test_counted_bytes_equal_the_file_and_the_file_round_trips(tmp_path, make):
    import json
    import struct

    aset = _aset()
    cset = make(aset)
    path = cset.save(tmp_path / "c")
    raw = path.read_bytes()
    header = struct.unpack("<Q", raw[:8])[0]
    assert len(raw) == 8 + header + cset.payload_bytes() == cset.nbytes()
    assert set(json.loads(raw[8:8 + header])) - {"__metadata__"} == set(cset.tensors())
    back = compress.load_compressed(tmp_path / "c")
    for m in cset.factors:
        for name, x in cset.factors[m].items():
            assert torch.equal(back.factors[m][name], x)
    assert back.mapping == cset.mapping and back.layout == cset.layout


def test_save_never_replaces_without_overwrite(tmp_path):
    from hydralib.errors import OutputExistsError

    cset = compress.quantize(_aset(), "int8")
    cset.save(tmp_path / "c")
    before = (tmp_path / "c" / "compressed.safetensors").read_bytes()
    with pytest.raises(OutputExistsError):
        compress.quantize(_aset(seed=1), "int8").save(tmp_path / "c")
    assert (tmp_path / "c" / "compressed.safetensors").read_bytes() == before


def test_bad_files_get_one_line_errors_naming_them(tmp_path):
    cset = compress.quantize(_aset(), "int8")
    path = cset.save(tmp_path / "c")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    for bad, pattern in ((tmp_path / "missing", "no such file"), (truncated, "cannot be read")):
        with pytest.raises(AdapterError, match=pattern) as err:
            compress.load_compressed(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(AdapterError, match="not a hydralib-compressed file"):
        compress.load_compressed(tmp_path / "plain.safetensors")
