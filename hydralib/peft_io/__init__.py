"""Read and write PEFT adapter directories (LoRA, DoRA, AdaLoRA and VeRA), safely.

Three parts: :mod:`.config` (the config file and the validation of every field
the loaders read), :mod:`.read` (a directory to validated tensors) and
:mod:`.write` (tensors back to a directory stock ``peft`` loads).

A PEFT adapter directory holds ``adapter_config.json`` and
``adapter_model.safetensors``. This module turns one directory into a
:class:`RawAdapter` (validated tensors keyed by module name) and writes such
tensors back as a directory that stock ``peft`` loads with
``PeftModel.from_pretrained``.

Conventions (shared by the whole library):

* module names are paths inside the base model, e.g.
  ``model.layers.3.self_attn.q_proj`` (the safetensors key without the
  ``base_model.model.`` prefix and the ``.lora_A.weight`` suffix);
* LoRA factors: ``lora_a`` A is ``(r, d_in)``, ``lora_b`` B is ``(d_out, r)``,
  ``scaling`` s is ``lora_alpha / r`` (or ``lora_alpha / sqrt(r)`` with rslora),
  and the update is ``dW = s * B @ A`` of shape ``(d_out, d_in)``. For
  ``fan_in_fan_out`` layers (GPT-2 ``Conv1D``) the factor shapes are the same;
  only the stored base weight is transposed.
* VeRA: trainable ``lambda_b`` ``(d_out,)`` and ``lambda_d`` ``(r,)`` and frozen
  shared projections ``vera_A`` ``(r, max_d_in)``, ``vera_B`` ``(max_d_out, r)``;
  ``dW = (lambda_b[:, None] * vera_B[:d_out]) @ (lambda_d[:, None] * vera_A[:, :d_in])``.

* DoRA (:mod:`.dora`): LoRA factors (the direction update) plus a magnitude
  vector m ``(d_out,)``; the weight is ``m * V / ||V||_row`` with
  ``V = W0 + s B A``, so it needs the base weights (:mod:`.base`).
* AdaLoRA (:mod:`.adalora`): read as LoRA factors of the kept rank
  (``A = lora_E * lora_A``, scaling ``lora_alpha / init_r``) with a matching
  ``LoraConfig``, so it exports as a plain LoRA.

Untrusted files are never unpickled: ``.bin`` checkpoints are refused.

Example
-------
>>> raw = read_adapter("adapters/grammar-en")          # doctest: +SKIP
>>> A, B, s = raw.lora["model.layers.0.self_attn.q_proj"]  # doctest: +SKIP
"""

from .config import (
    CONFIG_NAME,
    PICKLE_NAMES,
    PREFIX,
    VERA_PROJECTIONS,
    WEIGHTS_NAME,
    lora_rank_alpha_scaling,
    read_config,
    validate_config,
)
from .read import MAX_UPDATE_NORM, RawAdapter, check_floating, read_adapter, read_tensors, vera_projections
from .write import lora_config_for, lora_tensors, vera_tensors, write_adapter
from .base import base_weights
from .dora import MAGNITUDE_KEY, dora_tensors, dora_weight, row_norms

__all__ = [
    "CONFIG_NAME", "MAX_UPDATE_NORM", "PICKLE_NAMES", "PREFIX", "VERA_PROJECTIONS", "WEIGHTS_NAME", "RawAdapter",
    "check_floating", "lora_config_for", "lora_rank_alpha_scaling", "lora_tensors", "read_adapter", "read_config",
    "read_tensors", "validate_config", "vera_projections", "vera_tensors", "write_adapter",
    "MAGNITUDE_KEY", "base_weights", "dora_tensors", "dora_weight", "row_norms",
]
