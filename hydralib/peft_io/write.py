"""Tensors back to a PEFT directory that stock ``peft`` loads: the ``LoraConfig`` for given ranks and
scalings, peft's state-dict keys, and the atomic write of config and weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import torch

from ..atomic import atomic_dir
from .config import CONFIG_NAME, PREFIX, VERA_PROJECTIONS, WEIGHTS_NAME

def lora_config_for(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]],
    base_model: str | None,
    fan_in_fan_out: bool = False,
) -> dict:
    """A peft ``LoraConfig`` dict that reproduces the given per-module ranks and scalings.

    ``target_modules`` lists the full module names (exact matches), the most
    common rank becomes ``r``, and other ranks / scalings go to
    ``rank_pattern`` / ``alpha_pattern`` (``lora_alpha = scaling * r``).
    """
    from collections import Counter

    from peft import LoraConfig

    ranks = {m: int(A.shape[0]) for m, (A, _, _) in factors.items()}
    alphas = {m: float(s) * ranks[m] for m, (_, _, s) in factors.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    rank_pattern = {re.escape(m): v for m, v in ranks.items() if v != r}
    alpha_pattern = {re.escape(m): v for m, v in alphas.items() if v != alpha}
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=sorted(factors),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=fan_in_fan_out,
        base_model_name_or_path=base_model,
        lora_dropout=0.0,
        bias="none",
    )
    out = config.to_dict()
    out["peft_type"] = "LORA"
    out["target_modules"] = sorted(factors)
    return out


def _json_ready(config: dict) -> dict:
    def convert(value):
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):  # enums
            return value.value
        return value

    return convert(config)


def write_adapter(
    directory: str | Path,
    config: dict,
    tensors: Mapping[str, torch.Tensor],
    overwrite: bool = False,
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` atomically.

    ``tensors`` are keyed as peft stores them (``base_model.model.<module>.lora_A.weight``).
    """
    from safetensors.torch import save_file

    with atomic_dir(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(_json_ready(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS_NAME),
                  metadata={"format": "pt"})
    return Path(directory)


def lora_tensors(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]], dtype: torch.dtype) -> dict:
    """peft state-dict keys for LoRA factors ``{module: (A, B, scaling)}``."""
    out = {}
    for module, (A, B, _) in factors.items():
        out[f"{PREFIX}{module}.lora_A.weight"] = A.to(dtype)
        out[f"{PREFIX}{module}.lora_B.weight"] = B.to(dtype)
    return out


def vera_tensors(
    vectors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    projections: tuple[torch.Tensor, torch.Tensor] | None,
    dtype: torch.dtype,
) -> dict:
    """peft state-dict keys for VeRA vectors ``{module: (lambda_b, lambda_d)}`` (+ projections)."""
    out = {}
    for module, (lb, ld) in vectors.items():
        out[f"{PREFIX}{module}.vera_lambda_b"] = lb.to(dtype)
        out[f"{PREFIX}{module}.vera_lambda_d"] = ld.to(dtype)
    if projections is not None:
        # the frozen projections stay float32, as peft creates them
        out[VERA_PROJECTIONS[0]] = projections[0].float()
        out[VERA_PROJECTIONS[1]] = projections[1].float()
    return out
