"""peft's own merging path on the benchmark's adapters: a Llama of the same shapes, the adapters loaded into it.

Only the attention projections are adapted, so the base model is a
``LlamaForCausalLM`` built from a config with the preset's hidden size,
key/value width and layers, and a tiny vocabulary and MLP (random weights; no
file is downloaded). The N adapters are loaded from their PEFT directories
exactly as a user would (``PeftModel.from_pretrained`` then ``load_adapter``),
and merged with ``add_weighted_adapter``.

Example
-------
>>> cfg = llama_config_for(n_layers=16, d_model=2048, d_kv=512)
>>> cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size
(2048, 16, 4, 32)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["llama_config_for", "load_peft_model", "merged_factors"]


def llama_config_for(n_layers: int, d_model: int, d_kv: int, vocab_size: int = 32, intermediate_size: int = 16):
    """A ``LlamaConfig`` whose q/o are ``d_model x d_model`` and k/v ``d_kv x d_model`` (tiny vocab and MLP).

    The head size is the largest divisor of both widths up to 128; only the
    projection shapes matter for merging.
    """
    from transformers import LlamaConfig

    head_dim = math.gcd(int(d_model), int(d_kv))
    while head_dim > 128 and head_dim % 2 == 0:
        head_dim //= 2
    heads, kv_heads = d_model // head_dim, d_kv // head_dim
    if heads % kv_heads:
        raise ValueError(f"no grouped-query layout for d_model={d_model}, d_kv={d_kv}")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=int(d_model), intermediate_size=intermediate_size,
        num_hidden_layers=int(n_layers), num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, max_position_embeddings=64,
    )


def load_peft_model(directories: Sequence[str | Path], tasks: Sequence[str], n_layers: int, d_model: int, d_kv: int,
                    device: str = "cpu"):
    """A ``PeftModel`` over a random Llama of the given shapes with every adapter loaded (named by ``tasks``)."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(llama_config_for(n_layers, d_model, d_kv)).to(device).eval()
    model = PeftModel.from_pretrained(base, str(directories[0]), adapter_name=tasks[0])
    for directory, task in zip(directories[1:], tasks[1:]):
        model.load_adapter(str(directory), adapter_name=task)
    return model.eval()


def merged_factors(model, adapter_name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``{module: (lora_a, lora_b, scaling)}`` of one adapter inside a peft model (module names without ``base_model.model.``)."""
    out = {}
    for name, module in model.base_model.model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is not None and adapter_name in lora_a:
            out[name] = (lora_a[adapter_name].weight.detach(), module.lora_B[adapter_name].weight.detach(),
                         float(module.scaling[adapter_name]))
    return out
