"""The base model's weights W0 ``(d_out, d_in)`` that DoRA's row norm needs: from a torch model, a model
directory (``*.safetensors``) or a state dict."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..errors import AdapterError
from .read import read_tensors


def _state_dict_from_dir(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise AdapterError(f"{directory}: no *.safetensors weights of a base model (DoRA needs W0 for its norm)")
    out: dict[str, torch.Tensor] = {}
    for file in files:
        out.update(read_tensors(file))
    return out


def base_weights(base_model, shapes: Mapping[str, tuple[int, int, bool]]) -> dict[str, torch.Tensor]:
    """W0 ``(d_out, d_in)`` (float32, CPU) of every module in ``shapes`` = ``{module: (d_out, d_in, fan_in_fan_out)}``.

    ``base_model``: a torch model (e.g. a transformers model), a directory with its ``*.safetensors`` (a
    ``save_pretrained`` directory), or a state dict keyed ``<module>.weight``. GPT-2 ``Conv1D`` /
    ``fan_in_fan_out`` weights are stored ``(d_in, d_out)`` and are transposed here.
    """
    if base_model is None:
        raise AdapterError("DoRA needs the base model's weights for its row norm: pass base_model= (a model, "
                           "a model directory or a state dict)")
    where = "base_model"
    if isinstance(base_model, torch.nn.Module):
        state = {k: v.detach() for k, v in base_model.state_dict().items()}
        where = type(base_model).__name__
    elif isinstance(base_model, (str, Path)):
        where = str(base_model)
        if not Path(base_model).is_dir():
            raise AdapterError(f"{base_model}: base_model is not a model directory")
        state = _state_dict_from_dir(Path(base_model))
    elif isinstance(base_model, Mapping):
        state = dict(base_model)
    else:
        raise AdapterError(f"base_model: expected a torch model, a directory or a state dict, got {type(base_model).__name__}")
    out = {}
    for module, (d_out, d_in, fan) in shapes.items():
        weight = None
        for key in (f"{module}.weight", module, f"{module}.base_layer.weight", f"model.{module}.weight"):
            if key in state:
                weight = state[key]
                break
        if weight is None:
            raise AdapterError(f"{where}: no weight for module {module} (expected key '{module}.weight')")
        weight = weight.detach().to(device="cpu", dtype=torch.float32)
        if fan:
            weight = weight.T
        if tuple(weight.shape) != (d_out, d_in):
            raise AdapterError(f"{where}: module {module}: weight {tuple(weight.shape)} is not the adapter's "
                               f"(d_out, d_in) = ({d_out}, {d_in})")
        out[module] = weight.contiguous()
    return out
