"""DoRA (peft ``LoraConfig(use_dora=True)``): magnitude vectors, base weights, and the adapted weight.

A DoRA module stores LoRA factors A ``(r, d_in)``, B ``(d_out, r)`` (the
*direction update* ``s B A``) and a magnitude vector m ``(d_out,)`` under
``<module>.lora_magnitude_vector``. peft's ``DoraLinearLayer`` runs the weight

    W = m[:, None] * V / ||V||_row,    V = W0 + s B A    (d_out, d_in)

where ``||V||_row`` ``(d_out,)`` is the L2 norm of each output row of V (peft:
``torch.linalg.norm(weight, dim=1)`` after transposing ``fan_in_fan_out``
weights to ``(d_out, d_in)``), detached from the gradient. The norm needs the
base weight W0, so everything that forms W takes the base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import AdapterError
from .config import PREFIX

MAGNITUDE_KEY = "lora_magnitude_vector"


def split_magnitudes(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``<module>.lora_magnitude_vector`` tensors from ``tensors`` (in place); ``{module: m (d_out,)}``."""
    out = {}
    for key in [k for k in tensors if k.endswith("." + MAGNITUDE_KEY) or k.endswith(f".{MAGNITUDE_KEY}.weight")]:
        stripped = key[len(PREFIX):] if key.startswith(PREFIX) else key
        module = stripped[: stripped.rindex("." + MAGNITUDE_KEY)]
        out[module] = tensors.pop(key)
    if not out:
        raise AdapterError(f"{path}: use_dora=true but no '<module>.{MAGNITUDE_KEY}' tensors are stored")
    return out


def check_magnitudes(path: Path, lora: Mapping[str, tuple], magnitudes: Mapping[str, torch.Tensor]) -> None:
    """Every LoRA module has one finite magnitude vector ``(d_out,)`` and no other module has one."""
    for module in sorted(set(lora) | set(magnitudes)):
        if module not in magnitudes:
            raise AdapterError(f"{path}: module {module}: {MAGNITUDE_KEY} is missing (use_dora=true)")
        if module not in lora:
            raise AdapterError(f"{path}: module {module}: a {MAGNITUDE_KEY} without lora_A / lora_B")
        m, d_out = magnitudes[module], int(lora[module][1].shape[0])
        if tuple(m.shape) != (d_out,):
            raise AdapterError(f"{path}: module {module}: {MAGNITUDE_KEY} {tuple(m.shape)} is not (d_out,) = ({d_out},)")
        if not torch.isfinite(m.float()).all():
            raise AdapterError(f"{path}: module {module}: {MAGNITUDE_KEY} has NaN/Inf values")


def dora_tensors(magnitudes: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict:
    """peft state-dict keys for DoRA magnitude vectors ``{module: m (d_out,)}``."""
    return {f"{PREFIX}{module}.{MAGNITUDE_KEY}": m.to(dtype) for module, m in magnitudes.items()}


def row_norms(V: torch.Tensor) -> torch.Tensor:
    """peft's DoRA norm: the L2 norm of every output row of V ``(d_out, d_in)`` -> ``(d_out,)``."""
    return torch.linalg.norm(V, dim=1)


def dora_weight(W0: torch.Tensor, direction: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """The adapted weight ``m[:, None] * V / ||V||_row`` ``(d_out, d_in)`` with ``V = W0 + direction`` (dense dW)."""
    V = W0 + direction
    return (magnitude / row_norms(V))[:, None] * V
