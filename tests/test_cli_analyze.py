"""`hydralib analyze` writes the asymmetry summary and figures for any PEFT LoRA adapters."""

from __future__ import annotations

import json

import pytest

from hydralib.cli import EXIT_BAD_INPUT, EXIT_USAGE, main


def test_analyze_writes_summary_and_figures(lora_dirs, tmp_path, capsys):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"grammar-en": {"application": "grammar", "language": "en"},
                                "grammar-de": {"application": "grammar", "language": "de"},
                                "reply-en": {"application": "reply", "language": "en"}}))
    out = tmp_path / "analysis"
    assert main(["analyze", *map(str, lora_dirs), "--out", str(out), "--metadata", str(meta)]) == 0
    printed = capsys.readouterr().out
    assert "3 adapters, 8 modules" in printed and "more similar:" in printed
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "similarity_overlap.png", "similarity_cosine.png", "spectra_by_layer.png",
            "dendrogram_a.png", "dendrogram_b.png"} <= names
    summary = json.loads((out / "summary.json").read_text())
    overall = summary["verdict"]["overlap"]["overall"]
    assert overall["more_similar"] in ("A", "B") and 0 <= overall["a"] <= 1.0 + 1e-9
    assert set(summary["measures"]["overlap"]["a"]["by_projection"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert "same_application" in json.dumps(summary["groups"])
    assert all((out / n).stat().st_size > 5000 for n in names if n.endswith(".png"))


def test_analyze_refuses_to_overwrite_and_reports_bad_metadata(lora_dirs, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["analyze", str(lora_dirs[0]), str(lora_dirs[1]), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{not json")
    assert main(["analyze", str(lora_dirs[0]), "--out", str(tmp_path / "x"), "--metadata", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot read metadata JSON" in err and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- --init-seed: how far lora_A moved


def _untrained_adapter(directory, base, seed: int, b_seed: int, base_name: str = "tiny-llama"):
    """A stock-peft LoRA adapter made right after ``torch.manual_seed(seed)`` and not trained: lora_A is exactly
    peft's initial value; lora_B gets seeded random values so that the update is non-zero."""
    import torch
    from peft import LoraConfig, get_peft_model

    from conftest import LLAMA_TARGETS

    base.name_or_path = base_name
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, lora_dropout=0.0,
                        base_model_name_or_path=base_name)
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(b_seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(str(directory))
    model.unload()
    return directory


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """(base model config dir, two untrained adapters made with seed 7) on a tiny Llama."""
    from conftest import tiny_llama

    root = tmp_path_factory.mktemp("init")
    base = tiny_llama()
    base.config.save_pretrained(str(root / "base"))
    dirs = [_untrained_adapter(root / task, base, seed=7, b_seed=i) for i, task in enumerate(["qa-en", "qa-fr"])]
    return root / "base", dirs


def _lora_a(directory) -> dict:
    from safetensors.torch import load_file

    return {k: v.double() for k, v in load_file(str(directory / "adapter_model.safetensors")).items() if "lora_A" in k}


def _analyze(argv, out, capsys):
    assert main(["analyze", *map(str, argv), "--out", str(out)]) == 0, capsys.readouterr().err
    return json.loads((out / "summary.json").read_text())["init_distance"], capsys.readouterr().out


def test_analyze_init_seed_reports_how_far_lora_a_moved(untrained, tmp_path, capsys):
    import shutil

    import torch

    from conftest import edit_config, edit_tensors

    base_dir, dirs = untrained
    initial = _lora_a(dirs[0])
    assert all(torch.equal(initial[k], v) for k, v in _lora_a(dirs[1]).items())  # same seed, same initial A

    # untouched: lora_A is its initial value, the drift is 0
    drift, printed = _analyze([*dirs, "--init-seed", "7", "--base-model", base_dir], tmp_path / "clean", capsys)
    assert drift["seed"] == 7 and abs(drift["overall"]) < 1e-6, drift
    assert set(drift["by_task"]) == {"qa-en", "qa-fr"} and max(drift["by_task"].values()) < 1e-6
    assert set(drift["by_projection"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert "lora_A moved 0.000 of its initial norm on average (seed 7)" in printed

    # noise of known norm on one adapter's lora_A; the base model found through base_model_name_or_path
    copies = [tmp_path / "qa-en", tmp_path / "qa-fr"]
    for src, dst in zip(dirs, copies):
        shutil.copytree(src, dst)
        edit_config(dst, base_model_name_or_path=str(base_dir))
    generator = torch.Generator().manual_seed(3)

    def perturb(tensors):
        for key in sorted(tensors):
            if "lora_A" in key:
                noise = torch.randn(tensors[key].shape, generator=generator)
                tensors[key] = tensors[key] + 0.05 * noise / noise.norm()

    edit_tensors(copies[1], perturb)
    moved = _lora_a(copies[1])
    expected = sum(float((moved[k] - a0).norm() / a0.norm()) for k, a0 in initial.items()) / len(initial)
    assert 0.01 < expected < 1.0
    drift, printed = _analyze([*copies, "--init-seed", "7"], tmp_path / "perturbed", capsys)
    assert drift["by_task"]["qa-fr"] == pytest.approx(expected, rel=1e-5)
    assert drift["by_task"]["qa-en"] < 1e-6
    assert drift["overall"] == pytest.approx(expected / 2, rel=1e-5)
    assert f"lora_A moved {expected / 2:.3f} of its initial norm" in printed

    # a wrong seed regenerates an unrelated A
    drift, _ = _analyze([*dirs, "--init-seed", "8", "--base-model", base_dir], tmp_path / "wrong", capsys)
    assert drift["overall"] > 0.5 and min(drift["by_task"].values()) > 0.5


def test_analyze_init_seed_errors(untrained, tmp_path, capsys):
    from transformers import LlamaConfig

    base_dir, dirs = untrained

    def usage(argv) -> str:
        with pytest.raises(SystemExit) as exc:
            main(["analyze", *map(str, argv), "--out", str(tmp_path / "x")])
        assert exc.value.code == EXIT_USAGE
        return capsys.readouterr().err.splitlines()[-1]

    def bad(argv) -> str:
        assert main(["analyze", *map(str, argv), "--out", str(tmp_path / "x")]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith("hydralib analyze: error: ") and len(err.strip().splitlines()) == 1, err
        return err

    # base_model_name_or_path "tiny-llama" is not a local directory: pass --base-model
    last = usage([*dirs, "--init-seed", "7"])
    assert "--base-model" in last and "tiny-llama" in last and "adapter_config.json" in last
    assert "--init-seed" in usage([*dirs, "--base-model", base_dir])

    # a base model whose shapes do not match the adapters: the module and the file are named
    wide = tmp_path / "wide"
    LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64).save_pretrained(str(wide))
    err = bad([*dirs, "--init-seed", "7", "--base-model", wide])
    assert str(wide / "config.json") in err and "model.layers.0.self_attn" in err
    deep = tmp_path / "deep"
    LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64).save_pretrained(str(deep))
    err = bad([*dirs, "--init-seed", "7", "--base-model", deep])
    assert str(deep / "config.json") in err and "model.layers.2." in err

    # an unreadable config.json, and a directory without one
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes(b"{not json")
    err = bad([*dirs, "--init-seed", "7", "--base-model", broken])
    assert str(broken / "config.json") in err and "not valid JSON" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty / "config.json") in bad([*dirs, "--init-seed", "7", "--base-model", empty])
    assert not (tmp_path / "x").exists()
