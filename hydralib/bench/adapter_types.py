"""DoRA and AdaLoRA on a tiny Llama: synthetic adapters written by stock peft, and what merging them loses.

The adapters are not trained: stock peft creates them (``get_peft_model``), the
trainable tensors are replaced by seeded noise, and ``save_pretrained`` writes
them, so the files are exactly what peft writes.

* DoRA: lora_A ``A_i = sqrt(shared) A_0 + sqrt(1 - shared) N_i`` (a common part
  across tasks, so sharing A' has something to share), lora_B noise, and the
  magnitude ``m_i = ||W0 + s B_i A_i||_row * (1 + jitter n_i)``: peft's initial
  magnitude (the row norms), perturbed so that the magnitude carries part of
  the update.
* AdaLoRA: lora_A, lora_E, lora_B noise, then a ``rank_pattern`` that keeps a
  random ``keep`` of the ``init_r`` triplets per module, applied the way peft's
  ``RankAllocator.mask_using_rank_pattern`` does at the end of training.

:func:`measure` reports HydraOpt (K = N heads, r' = r) under each magnitude fit,
TA / TIES / DARE, and stored numbers and bytes per adapter type; run it with
``python -m hydralib.bench.adapter_types``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

__all__ = ["tiny_llama", "write_dora_adapter", "write_adalora_adapter", "measure"]

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny_llama(seed: int = 0, hidden: int = 32, layers: int = 2):
    """A random ``LlamaForCausalLM`` (vocabulary 64, 4 heads, 2 key/value heads), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    model.name_or_path = "tiny-llama"
    return model


def _noise(shape, generator, scale):
    return scale * torch.randn(shape, generator=generator)


def write_dora_adapter(directory, base, seed: int, rank: int = 4, alpha: float = 8, shared: float = 0.5,
                       jitter: float = 0.1, scale: float = 0.05, common_seed: int = 1000) -> Path:
    """Write one DoRA adapter of ``base`` (all attention projections) to ``directory`` with stock peft."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, use_dora=True, lora_dropout=0.0,
                        base_model_name_or_path=base.name_or_path)
    model = get_peft_model(base, config)
    g, common = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(common_seed)
    with torch.no_grad():
        for name, layer in model.base_model.model.named_modules():
            if not (hasattr(layer, "lora_A") and "default" in layer.lora_A):
                continue
            A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            A.copy_(math.sqrt(shared) * _noise(A.shape, common, scale) + math.sqrt(1 - shared) * _noise(A.shape, g, scale))
            B.copy_(_noise(B.shape, g, scale))
            s = layer.scaling["default"]
            V = layer.get_base_layer().weight + s * (B @ A)
            m = torch.linalg.norm(V, dim=1) * (1 + jitter * torch.randn(V.shape[0], generator=g))
            layer.lora_magnitude_vector["default"].weight.copy_(m)
    model.save_pretrained(str(directory))
    model.unload()
    return Path(directory)


def write_adalora_adapter(directory, base, seed: int, init_r: int = 6, keep: int = 3, alpha: float = 8,
                          scale: float = 0.05, zero_module: str | None = None) -> Path:
    """Write one pruned AdaLoRA adapter of ``base`` to ``directory`` with stock peft.

    Each module keeps ``keep`` random triplets of ``init_r`` (``zero_module``, a module name, keeps none).
    """
    from peft import AdaLoraConfig, get_peft_model

    config = AdaLoraConfig(init_r=init_r, target_r=keep, lora_alpha=alpha, target_modules=TARGETS, total_step=10,
                           lora_dropout=0.0, base_model_name_or_path=base.name_or_path)
    model = get_peft_model(base, config)
    g = torch.Generator().manual_seed(seed)
    pattern = {}
    with torch.no_grad():
        for name, param in model.base_model.model.named_parameters():
            if param.requires_grad:
                param.copy_(_noise(param.shape, g, scale if "lora_E" not in name else 1.0))
            if "lora_E" in name:
                kept = torch.randperm(init_r, generator=g)[:keep]
                mask = [bool(i in set(kept.tolist())) for i in range(init_r)]
                if zero_module is not None and name.startswith(zero_module + "."):
                    mask = [False] * init_r
                pattern[name] = mask
    model.peft_config["default"].rank_pattern = pattern
    model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, pattern)
    model.save_pretrained(str(directory))
    model.unload()
    return Path(directory)


def _stored(directory: Path) -> tuple[int, int]:
    """(numbers, bytes) of an adapter's safetensors file."""
    from safetensors.torch import load_file

    path = Path(directory) / "adapter_model.safetensors"
    return sum(t.numel() for t in load_file(str(path)).values()), path.stat().st_size


def measure(n_tasks: int = 4, rank: int = 4, seed: int = 0, shared: float = 0.5, progress: bool = False) -> dict:
    """The numbers of the DoRA / AdaLoRA study on the tiny Llama (see the module docstring)."""
    from peft import LoraConfig, get_peft_model

    from ..adapters import load_adapters
    from ..merge import hydraopt, hydraopt_dora, merge_adapters, merge_dora

    base = tiny_llama(seed)
    out: dict = {"n_tasks": n_tasks, "rank": rank, "shared": shared, "model": "tiny Llama, hidden 32, 2 layers"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dora = [write_dora_adapter(root / f"dora-{i}", base, seed=seed + i, rank=rank, shared=shared)
                for i in range(n_tasks)]
        ada = [write_adalora_adapter(root / f"ada-{i}", base, seed=seed + i, init_r=rank + 2, keep=rank)
               for i in range(n_tasks)]
        lora_cfg = LoraConfig(r=rank, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)
        model = get_peft_model(base, lora_cfg)
        model.save_pretrained(str(root / "lora"))
        model.unload()
        dset, aset = load_adapters(dora), load_adapters(ada)
        hydra = {}
        for r2 in sorted({rank, max(1, rank // 2)}):
            res = hydraopt_dora(dset, base_model=base, heads="task", rank=r2, progress=progress)
            hydra[f"K=N r'={r2}"] = {**{f"loss_{k}": v for k, v in res.losses.items()}, "storage": res.storage}
        out["dora_hydraopt"] = hydra
        baselines = {}
        for method, kw in (("task_arithmetic", {"lam": 1.0 / n_tasks}), ("ties", {"density": 0.5, "lam": 1.0}),
                           ("dare_linear", {"density": 0.5, "lam": 1.0 / n_tasks})):
            merged = merge_dora(dset, method, base_model=base, rank=rank, progress=progress, **kw)
            baselines[method] = {"loss": merged.loss, "storage": merged.storage, **kw}
        out["dora_baselines"] = baselines
        ada_h = hydraopt(aset, heads="task", rank=rank, progress=progress)
        ada_ta = merge_adapters(aset, "task_arithmetic", lam=1.0 / n_tasks, rank=rank, progress=progress)
        energy = ada_h.total_energy
        ta_loss = sum(float((ada_ta.delta(m) - aset.delta(t, m)).square().sum()) for t in aset.tasks for m in aset.modules)
        out["adalora"] = {"hydraopt K=N r'=r": ada_h.total_loss / energy, "task_arithmetic": ta_loss / energy}
        sizes = {"lora": _stored(root / "lora"), "dora": _stored(dora[0]), "adalora": _stored(ada[0])}
        out["storage_per_adapter"] = {k: {"numbers": n, "bytes": b, "relative_to_lora": round(n / sizes["lora"][0], 4)}
                                      for k, (n, b) in sizes.items()}
        all_dora = n_tasks * sizes["dora"][0]
        for entry in (*hydra.values(), *baselines.values()):
            entry["relative_storage"] = round(entry["storage"] / all_dora, 4)  # of keeping the N DoRA adapters
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="DoRA / AdaLoRA merging losses and storage on a tiny Llama")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--shared", type=float, default=0.5, help="fraction of lora_A's variance common to all tasks")
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(cli.tasks, cli.rank, cli.seed, cli.shared), indent=2))
