"""Shared fixtures: tiny transformers models and adapters written by stock peft.

Nothing here is downloaded: models are built from configs with random weights.
LoRA B starts at zero in peft, so the fixtures fill every adapter tensor with
seeded random numbers to make dW non-trivial before saving.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ROOT = Path(__file__).resolve().parents[1]


def tiny_llama(seed: int = 0, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def randomise_adapter(peft_model, seed: int, scale: float = 0.1) -> None:
    """Fill every trainable adapter tensor with seeded normal noise (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if param.requires_grad:
                param.copy_(scale * torch.randn(param.shape, generator=generator))


def save_peft_adapter(directory: Path, base, config, seed: int = 0, base_name: str | None = "tiny-llama") -> Path:
    """Wrap ``base`` with ``config`` by stock peft, randomise, save to ``directory``; unwrap ``base`` again."""
    from peft import get_peft_model

    base.name_or_path = base_name or ""  # peft records the base model's name_or_path in the config
    config.base_model_name_or_path = base_name
    model = get_peft_model(base, config)
    randomise_adapter(model, seed)
    model.save_pretrained(str(directory))
    model.unload()  # restores the base model's own modules for the next adapter
    return Path(directory)


@pytest.fixture(scope="session")
def llama_base():
    return tiny_llama()


@pytest.fixture(scope="session")
def lora_dirs(tmp_path_factory, llama_base):
    """Three LoRA adapters (r=4, alpha=8) on q/k/v/o of a tiny Llama, written by stock peft."""
    from peft import LoraConfig

    root = tmp_path_factory.mktemp("lora")
    dirs = []
    for i, task in enumerate(["grammar-en", "grammar-de", "reply-en"]):
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, lora_dropout=0.0)
        dirs.append(save_peft_adapter(root / task, llama_base, cfg, seed=i))
    return dirs


@pytest.fixture(scope="session")
def gpt2_lora_dir(tmp_path_factory):
    """A LoRA adapter on GPT-2's fused Conv1D layers (fan_in_fan_out=True), written by stock peft."""
    from peft import LoraConfig

    root = tmp_path_factory.mktemp("gpt2")
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, lora_dropout=0.0)
    return save_peft_adapter(root / "gpt2-task", tiny_gpt2(), cfg, seed=7, base_name="tiny-gpt2")


def peft_deltas(peft_model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """dW that peft itself applies, ``{module: (d_out, d_in)}`` (transposed back for fan_in_fan_out)."""
    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        owned = [getattr(module, key, {}) for key in ("lora_A", "vera_lambda_d")]
        if hasattr(module, "get_delta_weight") and any(adapter_name in d for d in owned):
            delta = module.get_delta_weight(adapter_name)
            if getattr(module, "fan_in_fan_out", False):
                delta = delta.T
            out[name] = delta.detach()
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The real book, built once per session with the same flags as ``make book``, on the ``tiny`` preset
    (its zoo is trained into a scratch cache in seconds); returns ``_build/html``.

    ``HYDRALIB_SITE=path/to/_build/html`` checks a site built before instead (e.g. the ``default`` build of
    ``make book``), without building."""
    if os.environ.get("HYDRALIB_SITE"):
        return Path(os.environ["HYDRALIB_SITE"]).resolve()
    out = tmp_path_factory.mktemp("site")
    exe = Path(sys.executable).with_name("jupyter-book")
    env = dict(os.environ, HYDRALIB_PRESET="tiny", HYDRALIB_CACHE=str(tmp_path_factory.mktemp("cache")))
    result = subprocess.run([str(exe), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                            capture_output=True, text=True, timeout=3000, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "_build" / "html"


def edit_config(directory: Path, **changes) -> None:
    """Change keys of an adapter directory's adapter_config.json in place."""
    import json

    path = directory / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def edit_tensors(directory: Path, fn) -> None:
    """Apply ``fn(tensors)`` (in place on the dict) to an adapter directory's safetensors file."""
    from safetensors.torch import load_file, save_file

    path = str(directory / "adapter_model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)
