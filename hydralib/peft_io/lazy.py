"""One PEFT LoRA directory read lazily: the header now (:func:`open_adapter` -> :class:`LazyAdapter`), a
module's factors when asked (:meth:`LazyAdapter.read_module`).

:func:`open_adapter` validates the config and, from the safetensors header alone
(``safetensors.safe_open``; no tensor data is read), every key, dtype and
shape: the same structural checks as :func:`~hydralib.peft_io.read_adapter`.
:meth:`LazyAdapter.read_module` opens the file again for each call (no handle
or memory map stays open between calls, so a file changed or truncated on disk
is noticed, not read past its end) and runs the value checks (finite, update
not too large) on the two tensors it reads. Every error is one line that names
the file and the module. Thread safe: calls share no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import AdapterError
from .config import CONFIG_NAME, _first_line, _refuse_unsupported_lora, lora_rank_alpha_scaling
from .read import LORA_KEY, check_finite, check_update_size, open_config, strip_prefix, weights_path

__all__ = ["LazyAdapter", "open_adapter", "SAFETENSORS_DTYPES"]

#: safetensors dtype code -> torch dtype (floating point only: PEFT adapters store real factors)
SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


@dataclass
class LazyAdapter:
    """A PEFT LoRA directory whose header was read and validated.

    ``modules[module] = (key of lora_A, key of lora_B, rank r, d_out, d_in, scaling)``;
    A is ``(r, d_in)`` and B ``(d_out, r)``.
    """

    path: Path
    weights: Path
    config: dict
    modules: dict[str, tuple[str, str, int, int, int, float]] = field(default_factory=dict)
    stored_dtype: torch.dtype = torch.float32
    kind: str = "lora"

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    def read_module(self, module: str, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(A (r, d_in), B (d_out, r), scaling)`` of ``module`` read from disk now, checked; cast to ``dtype``
        (default: as stored). The tensors are copies: no memory map of the file outlives the call."""
        from safetensors import safe_open

        key_a, key_b, r, d_out, d_in, scaling = self.modules[module]
        try:
            with safe_open(str(self.weights), framework="pt") as f:  # get_tensor views the map: copy out of it
                A = f.get_tensor(key_a)
                A = A.to(dtype or A.dtype, copy=True)
                B = f.get_tensor(key_b)
                B = B.to(dtype or B.dtype, copy=True)
        except Exception as exc:  # SafetensorError, OSError: the file changed since it was opened
            raise AdapterError(f"{self.weights}: module {module}: cannot read lora_A/lora_B "
                               f"(file changed or truncated since it was opened: {_first_line(exc)})") from None
        if tuple(A.shape) != (r, d_in) or tuple(B.shape) != (d_out, r):
            raise AdapterError(f"{self.weights}: module {module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} "
                               f"differ from ({r}, {d_in}) / ({d_out}, {r}) when the file was opened")
        check_finite(self.weights, module, "lora_A", A)
        check_finite(self.weights, module, "lora_B", B)
        check_update_size(self.weights, module, abs(scaling) * float(A.double().norm()) * float(B.double().norm()))
        return A, B, scaling

    def file_bytes(self) -> int:
        return self.weights.stat().st_size


def _header(weights: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{key: (dtype code, shape)}`` from the safetensors header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            out = {}
            for key in f.keys():
                part = f.get_slice(key)
                out[key] = (part.get_dtype(), tuple(int(s) for s in part.get_shape()))
            return out
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError...
        raise AdapterError(f"{weights}: corrupt or truncated safetensors file ({_first_line(exc)})") from None


def open_adapter(directory: str | Path) -> LazyAdapter:
    """Validate a PEFT LoRA directory from its config and safetensors header; no tensor data is read.

    VeRA directories raise :class:`~hydralib.errors.AdapterError` (read them with
    :func:`~hydralib.peft_io.read_adapter`: their vectors are small).
    """
    directory, config = open_config(directory)
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{directory / CONFIG_NAME}: peft_type {config.get('peft_type')!r}: lazy loading "
                           "reads LoRA adapters only")
    weights = weights_path(directory)
    _refuse_unsupported_lora(directory, config)
    header = _header(weights)
    if not header:
        raise AdapterError(f"{weights}: holds no tensors")
    halves: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for key, (code, shape) in sorted(header.items()):
        if code not in SAFETENSORS_DTYPES:
            raise AdapterError(f"{weights}: tensor {key}: dtype {code} is not floating point "
                               "(PEFT adapters store real floating-point factors)")
        match = LORA_KEY.match(strip_prefix(key))
        if match is None:
            if "lora_magnitude_vector" in key:
                raise AdapterError(f"{weights}: tensor {key}: DoRA magnitude vectors are refused (the update is non-linear)")
            raise AdapterError(f"{weights}: tensor {key}: not a LoRA weight (expected '<module>.lora_A.weight' / '.lora_B.weight')")
        halves.setdefault(match["module"], {})[match["side"]] = (key, shape)
    modules = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{weights}: module {module}: {'lora_B' if 'A' in pair else 'lora_A'} is missing")
        (key_a, sa), (key_b, sb) = pair["A"], pair["B"]
        if len(sa) != 2 or len(sb) != 2 or 0 in sa or 0 in sb:
            raise AdapterError(f"{weights}: module {module}: lora_A {sa} / lora_B {sb} are not non-empty matrices")
        try:
            r, _, scaling = lora_rank_alpha_scaling(config, module)
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"{directory / CONFIG_NAME}: module {module}: bad rank or alpha ({exc})") from None
        if sa[0] != r or sb[1] != r:
            raise AdapterError(f"{weights}: module {module}: lora_A {sa} and lora_B {sb} disagree with rank {r} "
                               f"from {CONFIG_NAME}")
        modules[module] = (key_a, key_b, int(r), int(sb[0]), int(sa[1]), float(scaling))
    codes = {code for code, _ in header.values()}
    stored = SAFETENSORS_DTYPES[codes.pop()] if len(codes) == 1 else torch.float32
    return LazyAdapter(directory, weights, config, modules, stored)
