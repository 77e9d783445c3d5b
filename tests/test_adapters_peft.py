"""Adapter sets against stock peft: the dW we compute is the dW peft applies, and round trips are lossless."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from hydralib import AdapterSet, load_adapters
from hydralib.peft_io import WEIGHTS_NAME

from conftest import LLAMA_TARGETS, peft_deltas, save_peft_adapter, tiny_gpt2, tiny_llama


def _load_in_peft(base, directory):
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(directory))


def _assert_same_deltas(aset: AdapterSet, task: str, peft_model, atol=1e-6):
    theirs = peft_deltas(peft_model)
    assert sorted(theirs) == aset.modules
    for module, delta in theirs.items():
        torch.testing.assert_close(aset.delta(task, module), delta.float(), atol=atol, rtol=1e-5)


def test_load_llama_set_shapes_and_metadata(lora_dirs):
    meta = {"grammar-en": {"application": "grammar", "language": "en"}}
    aset = load_adapters(lora_dirs, metadata=meta)
    assert aset.kind == "lora"
    assert aset.tasks == ["grammar-en", "grammar-de", "reply-en"]
    assert len(aset.modules) == 2 * 4
    assert aset.shape("model.layers.0.self_attn.q_proj") == (32, 32)
    assert aset.shape("model.layers.1.self_attn.k_proj") == (16, 32)  # 2 kv heads x head_dim 8
    assert {aset.rank(t, m) for t in aset.tasks for m in aset.modules} == {4}
    assert {aset.scaling(t, m) for t in aset.tasks for m in aset.modules} == {2.0}
    assert aset.metadata["grammar-en"] == {"application": "grammar", "language": "en"}
    assert aset.metadata["reply-en"] == {}
    A, B, s = aset.factors("grammar-de", "model.layers.0.self_attn.v_proj")
    assert A.shape == (4, 32) and B.shape == (16, 4) and s == 2.0


def test_glob_sources_and_task_names(lora_dirs):
    pattern = str(lora_dirs[0].parent / "*")
    aset = load_adapters(pattern)
    assert aset.tasks == sorted(p.name for p in lora_dirs)
    named = load_adapters(lora_dirs, tasks=["a", "b", "c"])
    assert named.tasks == ["a", "b", "c"]


def test_delta_equals_what_peft_applies(lora_dirs, llama_base):
    aset = load_adapters(lora_dirs)
    for task, directory in zip(aset.tasks, lora_dirs):
        model = _load_in_peft(llama_base, directory)
        _assert_same_deltas(aset, task, model)
        model.unload()


def test_round_trip_through_peft_is_lossless(lora_dirs, llama_base, tmp_path):
    aset = load_adapters(lora_dirs)
    out = aset.save_peft("grammar-de", tmp_path / "copy")
    # the weights are bit-identical to the original file
    original, copy = load_file(str(lora_dirs[1] / WEIGHTS_NAME)), load_file(str(out / WEIGHTS_NAME))
    assert original.keys() == copy.keys()
    for key in original:
        assert torch.equal(original[key], copy[key]), key
    # stock peft loads the copy and applies the same dW
    model = _load_in_peft(llama_base, out)
    _assert_same_deltas(aset, "grammar-de", model)
    model.unload()
    again = load_adapters([out], tasks=["grammar-de"])
    for m in aset.modules:
        assert torch.equal(again.delta("grammar-de", m), aset.delta("grammar-de", m))


def test_half_precision_files_round_trip(lora_dirs, tmp_path):
    aset = load_adapters(lora_dirs[:1])
    half = aset.save_peft(aset.tasks[0], tmp_path / "half", dtype=torch.float16)
    tensors = load_file(str(half / WEIGHTS_NAME))
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    loaded = load_adapters([half])
    assert loaded.stored_dtypes[loaded.tasks[0]] == torch.float16
    assert loaded.dtype == torch.float32  # computation in float32 by default
    again = loaded.save_peft(loaded.tasks[0], tmp_path / "half2")  # keeps the stored dtype
    tensors2 = load_file(str(again / WEIGHTS_NAME))
    assert all(torch.equal(tensors[k], tensors2[k]) for k in tensors)


def test_rslora_rank_pattern_alpha_pattern(tmp_path):
    from peft import LoraConfig

    base = tiny_llama(seed=1)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, use_rslora=True,
        rank_pattern={"q_proj": 2, "layers.1.self_attn.o_proj": 6}, alpha_pattern={"v_proj": 3},
        lora_dropout=0.0,
    )
    directory = save_peft_adapter(tmp_path / "rs", base, cfg, seed=3)
    aset = load_adapters([directory])
    t = aset.tasks[0]
    assert aset.rank(t, "model.layers.0.self_attn.q_proj") == 2
    assert aset.rank(t, "model.layers.1.self_attn.o_proj") == 6
    assert aset.rank(t, "model.layers.0.self_attn.o_proj") == 4
    assert aset.scaling(t, "model.layers.0.self_attn.q_proj") == pytest.approx(8 / math.sqrt(2))
    assert aset.scaling(t, "model.layers.0.self_attn.v_proj") == pytest.approx(3 / math.sqrt(4))
    assert aset.scaling(t, "model.layers.1.self_attn.o_proj") == pytest.approx(8 / math.sqrt(6))
    model = _load_in_peft(base, directory)
    _assert_same_deltas(aset, t, model)


def test_from_factors_saves_a_directory_peft_loads(tmp_path):
    base = tiny_llama(seed=2)
    names = {n: m.weight.shape for n, m in base.named_modules() if n.endswith(("q_proj", "v_proj"))}
    g = torch.Generator().manual_seed(0)
    factors = {}
    for i, (name, (d_out, d_in)) in enumerate(sorted(names.items())):
        r = 3 if i % 2 else 5  # mixed ranks and scalings need rank_pattern / alpha_pattern
        factors[name] = (torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), 0.5 + i)
    aset = AdapterSet.from_factors({"synthetic": factors}, base_model="tiny-llama")
    out = aset.save_peft("synthetic", tmp_path / "synthetic")
    model = _load_in_peft(base, out)
    _assert_same_deltas(aset, "synthetic", model, atol=1e-5)
    back = load_adapters([out])
    for m in aset.modules:
        assert back.rank("synthetic", m) == aset.rank("synthetic", m)
        assert back.scaling("synthetic", m) == pytest.approx(aset.scaling("synthetic", m))


def test_gpt2_fan_in_fan_out(gpt2_lora_dir):
    base = tiny_gpt2()
    aset = load_adapters([gpt2_lora_dir])
    t = aset.tasks[0]
    assert aset.base_model == "tiny-gpt2"
    assert aset.module_info("transformer.h.0.attn.c_attn").fan_in_fan_out
    assert aset.shape("transformer.h.0.attn.c_attn") == (96, 32)  # fused q, k, v
    assert aset.shape("transformer.h.0.mlp.c_proj") == (32, 128)
    model = _load_in_peft(base, gpt2_lora_dir)
    _assert_same_deltas(aset, t, model)


def test_gpt2_exports_keep_fan_in_fan_out(gpt2_lora_dir, tmp_path):
    """HydraOpt exports (eager, from a saved bundle, streamed), merged and compressed exports of Conv1D adapters say
    fan_in_fan_out=true, and stock peft loads them without correcting the flag, with the same deltas."""
    import json
    import warnings

    from hydralib.compress import compress_adapters
    from hydralib.merge import export_peft, hydraopt, load_bundle, merge_adapters
    from hydralib.merge.hydraopt.stream import export_peft_streamed

    aset = load_adapters([gpt2_lora_dir])
    result = hydraopt(aset, heads="task", rank=4, progress=False)
    result.save(tmp_path / "bundle")
    assert load_bundle(tmp_path / "bundle").fan_in_fan_out is True
    out = {"eager": export_peft(result, tmp_path / "eager"),
           "streamed": export_peft_streamed(tmp_path / "bundle", tmp_path / "streamed"),
           "compressed": None}
    cset = compress_adapters(aset, "quantize", codec="int8")
    out["compressed"] = {t: cset.to_adapter_set().save_peft(t, tmp_path / "compressed" / t) for t in cset.tasks}
    merged = merge_adapters(aset, "ties", density=0.5, progress=False).to_adapter_set("ties")
    out["merged"] = {"ties": merged.save_peft("ties", tmp_path / "merged")}
    for how, dirs in out.items():
        for task, directory in dirs.items():
            assert json.loads((directory / "adapter_config.json").read_text())["fan_in_fan_out"] is True, how
            with warnings.catch_warnings(record=True) as caught:  # peft warns when it has to flip the flag itself
                warnings.simplefilter("always")
                model = _load_in_peft(tiny_gpt2(), directory)
            assert not [w for w in caught if "fan_in_fan_out" in str(w.message)], how
            _assert_same_deltas(load_adapters([directory], tasks=[task]), task, model)


def test_to_dtype_and_subset(lora_dirs):
    aset = load_adapters(lora_dirs)
    half = aset.to(dtype=torch.float64)
    assert half.dtype == torch.float64 and aset.dtype == torch.float32
    m = aset.modules[0]
    torch.testing.assert_close(half.delta("reply-en", m).float(), aset.delta("reply-en", m))
    sub = aset.subset(["reply-en", "grammar-en"])
    assert sub.tasks == ["reply-en", "grammar-en"]
    assert torch.equal(sub.delta("reply-en", m), aset.delta("reply-en", m))
    with pytest.raises(KeyError, match="unknown task"):
        aset.subset(["nope"])


@pytest.mark.parametrize("save_projection", [True, False])
def test_vera_matches_peft(tmp_path, save_projection):
    from peft import VeraConfig

    base = tiny_llama(seed=4)
    dirs = []
    for i in range(2):
        cfg = VeraConfig(r=8, target_modules=LLAMA_TARGETS, projection_prng_key=11,
                         save_projection=save_projection, vera_dropout=0.0)
        dirs.append(save_peft_adapter(tmp_path / f"vera{i}", base, cfg, seed=20 + i))
    kwargs = {} if save_projection else {"base_model": base}
    aset = load_adapters(dirs, **kwargs)
    assert aset.kind == "vera"
    m = "model.layers.0.self_attn.k_proj"
    lb, ld = aset.vera_vectors("vera1", m)
    assert lb.shape == (16,) and ld.shape == (8,)
    A, B, s = aset.factors("vera1", m)
    assert A.shape == (8, 32) and B.shape == (16, 8) and s == 1.0
    for task, directory in zip(aset.tasks, dirs):
        model = _load_in_peft(base, directory)
        _assert_same_deltas(aset, task, model)
        model.unload()
    # saved back, stock peft loads it and applies the same dW
    out = aset.save_peft("vera0", tmp_path / "vera-copy")
    model = _load_in_peft(base, out)
    _assert_same_deltas(aset, "vera0", model)


def test_vera_regenerated_projections_equal_saved_ones(tmp_path):
    from peft import VeraConfig

    base = tiny_llama(seed=5)
    saved = save_peft_adapter(tmp_path / "saved", base, VeraConfig(r=8, target_modules=LLAMA_TARGETS,
                              projection_prng_key=3, save_projection=True), seed=1)
    bare = save_peft_adapter(tmp_path / "bare", base, VeraConfig(r=8, target_modules=LLAMA_TARGETS,
                             projection_prng_key=3, save_projection=False), seed=1)
    from_file = load_adapters([saved])
    regenerated = load_adapters([bare], module_shapes={m: from_file.shape(m) for m in from_file.modules})
    for p, q in zip(from_file.projections, regenerated.projections):
        assert torch.equal(p, q)
