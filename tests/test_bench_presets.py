"""Benchmark presets and structured synthetic adapters: shapes, overrides, and the change of basis leaves dW alone."""

from __future__ import annotations

import pytest
import torch

from hydralib.synthetic import STRUCTURE, change_basis, structured_factors, task_names, write_peft_dirs
from hydralib.bench.peft_model import llama_config_for
from hydralib.bench.presets import BENCH_PRESETS, bench_preset


def test_presets_have_the_issue_shapes():
    smol, llama = BENCH_PRESETS["smollm2"], BENCH_PRESETS["llama-3.2-1b"]
    assert (smol.n_layers, smol.d_model, smol.d_kv, smol.rank, smol.n_tasks) == (30, 576, 192, 8, 40)
    assert (llama.n_layers, llama.d_model, llama.d_kv, llama.rank, llama.n_tasks) == (16, 2048, 512, 32, 40)
    modules = llama.modules()
    assert len(modules) == 16 * 4
    assert modules["model.layers.15.self_attn.q_proj"] == (2048, 2048)
    assert modules["model.layers.0.self_attn.v_proj"] == (512, 2048)
    assert modules["model.layers.3.self_attn.o_proj"] == (2048, 2048)
    # one adapter: r (d_in + d_out) per module
    assert llama.adapter_params == 16 * 32 * (2 * 4096 + 2 * 2560)


def test_overrides_and_errors():
    p = bench_preset("smollm2", n_tasks=5, rank=4, d_model=1152)
    assert (p.n_tasks, p.rank, p.d_model, p.d_kv, p.n_layers) == (5, 4, 1152, 384, 30)  # d_kv keeps the ratio
    assert bench_preset("llama-3.2-1b", d_model=1024, d_kv=256, n_layers=2).modules()["model.layers.1.self_attn.k_proj"] == (256, 1024)
    with pytest.raises(ValueError, match="unknown benchmark preset"):
        bench_preset("gpt-5")
    with pytest.raises(ValueError, match="n_tasks must be >= 1"):
        bench_preset("smollm2", n_tasks=0)


def test_structured_factors_shapes_groups_and_seed():
    preset = bench_preset("smollm2", n_tasks=10, n_layers=2, rank=3)
    factors, metadata = structured_factors(preset, seed=1)
    assert list(factors) == task_names(10, STRUCTURE["n_groups"])[0]
    assert len({m["application"] for m in metadata.values()}) == 5
    for task in factors:
        assert set(factors[task]) == set(preset.modules())
        for module, (d_out, d_in) in preset.modules().items():
            A, B, s = factors[task][module]
            assert A.shape == (3, d_in) and B.shape == (d_out, 3) and s == 2.0 and A.dtype == torch.float32
    again, _ = structured_factors(preset, seed=1)
    other, _ = structured_factors(preset, seed=2)
    key = ("app0-t00", "model.layers.0.self_attn.q_proj")
    assert torch.equal(factors[key[0]][key[1]][0], again[key[0]][key[1]][0])
    assert not torch.equal(factors[key[0]][key[1]][0], other[key[0]][key[1]][0])


def test_change_of_basis_keeps_every_delta():
    preset = bench_preset("smollm2", n_tasks=4, n_layers=1, rank=4)
    aligned, _ = structured_factors(preset, seed=0, basis="aligned")
    rotated, _ = structured_factors(preset, seed=0, basis="random")
    for task in aligned:
        for module in aligned[task]:
            A0, B0, s0 = aligned[task][module]
            A1, B1, s1 = rotated[task][module]
            assert not torch.allclose(A0, A1)
            torch.testing.assert_close(s1 * B1 @ A1, s0 * B0 @ A0, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="basis"):
        structured_factors(preset, basis="sideways")
    assert change_basis({}, 0) == {}


def test_peft_dirs_round_trip(tmp_path):
    import hydralib

    preset = bench_preset("smollm2", n_tasks=3, n_layers=1, rank=2, d_model=64, d_kv=32)
    factors, metadata = structured_factors(preset, seed=0)
    dirs = write_peft_dirs(factors, metadata, tmp_path)
    aset = hydralib.load_adapters(dirs)
    assert aset.tasks == list(factors)
    A, B, s = aset.factors("app1-t01", "model.layers.0.self_attn.k_proj")
    assert torch.equal(A, factors["app1-t01"]["model.layers.0.self_attn.k_proj"][0]) and s == 2.0


def test_llama_config_matches_the_shapes():
    from transformers import LlamaForCausalLM

    config = llama_config_for(n_layers=1, d_model=96, d_kv=32)
    model = LlamaForCausalLM(config)
    attn = model.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (96, 96) and tuple(attn.k_proj.weight.shape) == (32, 96)
    assert tuple(attn.o_proj.weight.shape) == (96, 96)
