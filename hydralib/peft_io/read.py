"""One PEFT directory to validated tensors: :func:`read_adapter` -> :class:`RawAdapter` (LoRA factors or
VeRA vectors keyed by module). Weights come from safetensors only; pickles are refused."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ..errors import AdapterError
from .config import (
    CONFIG_NAME,
    PICKLE_NAMES,
    PREFIX,
    VERA_PROJECTIONS,
    WEIGHTS_NAME,
    _first_line,
    _is_int,
    _refuse_unsupported_lora,
    _show,
    lora_rank_alpha_scaling,
    read_config,
    validate_config,
)

LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
_VERA_KEY = re.compile(r"^(?P<module>.+)\.vera_lambda_(?P<side>[bd])$")


@dataclass
class RawAdapter:
    """One adapter directory, validated.

    ``lora`` maps module -> (A ``(r, d_in)``, B ``(d_out, r)``, scaling) for
    LoRA; ``vera`` maps module -> (lambda_b ``(d_out,)``, lambda_d ``(r,)``)
    for VeRA, with ``projections`` = (vera_A, vera_B) when the file stores them.
    """

    path: Path
    kind: str
    config: dict
    lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)
    vera: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    projections: tuple[torch.Tensor, torch.Tensor] | None = None
    stored_dtype: torch.dtype = torch.float32
    adapter_type: str = ""  # "lora", "adalora" (read as LoRA; config is then a LoraConfig), "dora" or "vera"
    magnitudes: dict[str, torch.Tensor] = field(default_factory=dict)  # DoRA: module -> m (d_out,)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def modules(self) -> list[str]:
        return sorted(self.lora or self.vera)

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))



def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle); corrupt or truncated files raise AdapterError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError...
        raise AdapterError(f"{path}: corrupt or truncated safetensors file ({_first_line(exc)})") from None



def check_floating(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse tensors that are not floating point (integer codes, bool, complex): a PEFT adapter stores real
    factors; quantized storage is hydralib's own container (:func:`hydralib.compress.load_compressed`)."""
    for key, tensor in sorted(tensors.items()):
        if not tensor.dtype.is_floating_point:
            raise AdapterError(
                f"{path}: tensor {key}: dtype {str(tensor.dtype).removeprefix('torch.')} is not floating point "
                "(PEFT adapters store real floating-point factors)"
            )


def weights_path(directory: Path) -> Path:
    path = directory / WEIGHTS_NAME
    if path.is_file():
        return path
    for name in PICKLE_NAMES:
        if (directory / name).is_file():
            raise AdapterError(
                f"{directory / name}: pickle checkpoints are refused (unpickling can run arbitrary code); "
                "convert it once where you trust it: "
                "safetensors.torch.save_file(torch.load(path, weights_only=True), 'adapter_model.safetensors')"
            )
    raise AdapterError(f"{path}: missing adapter weights")


def check_finite(path: Path, module: str, name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype.itemsize < 2:  # float8: torch.isfinite is not implemented for it
        tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise AdapterError(f"{path}: module {module}: {name} has {bad} NaN/Inf values")


# The largest bound |s| ||B||_F ||A||_F on the norm of an update dW = s B A that hydralib accepts: squared norms
# (energies, Gram matrices) of such updates, summed over many modules and tasks, stay finite in float32.
MAX_UPDATE_NORM = 1e15


def check_update_size(path: Path, module: str, bound: float) -> None:
    """Refuse an update whose norm bound ``bound`` (computed in float64) exceeds :data:`MAX_UPDATE_NORM`."""
    if not bound <= MAX_UPDATE_NORM:
        raise AdapterError(f"{path}: module {module}: the update is too large for float32 arithmetic "
                           f"(norm up to {bound:.3g} > {MAX_UPDATE_NORM:.0e})")



def strip_prefix(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def _parse_lora(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> dict:
    _refuse_unsupported_lora(path.parent, config)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stripped = strip_prefix(key)
        match = LORA_KEY.match(stripped)
        if match is None:
            if "lora_magnitude_vector" in key:
                raise AdapterError(f"{path}: tensor {key}: a DoRA magnitude vector, but {CONFIG_NAME} does not set use_dora=true")
            if "lora_embedding_" in key:
                raise AdapterError(f"{path}: tensor {key}: embedding LoRA is not supported (only linear layers)")
            raise AdapterError(f"{path}: tensor {key}: not a LoRA weight (expected '<module>.lora_A.weight' / '.lora_B.weight')")
        halves.setdefault(match["module"], {})[match["side"]] = tensor
    if not halves:
        raise AdapterError(f"{path}: no LoRA tensors found")
    modules = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise AdapterError(f"{path}: module {module}: {missing} is missing")
        A, B = pair["A"], pair["B"]
        if A.ndim != 2 or B.ndim != 2:
            raise AdapterError(
                f"{path}: module {module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} are not matrices "
                "(convolution LoRA is not supported)"
            )
        if A.numel() == 0 or B.numel() == 0:
            raise AdapterError(f"{path}: module {module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} are empty")
        try:
            r, _, scaling = lora_rank_alpha_scaling(config, module)
        except (TypeError, ValueError) as exc:
            raise AdapterError(f"{path.parent / CONFIG_NAME}: module {module}: bad rank or alpha ({exc})") from None
        if A.shape[0] != r or B.shape[1] != r:
            raise AdapterError(
                f"{path}: module {module}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} "
                f"disagree with rank {r} from {CONFIG_NAME}"
            )
        check_finite(path, module, "lora_A", A)
        check_finite(path, module, "lora_B", B)
        check_update_size(path, module, abs(scaling) * float(A.double().norm()) * float(B.double().norm()))
        modules[module] = (A, B, scaling)
    return modules


def _parse_vera(path: Path, config: dict, tensors: dict[str, torch.Tensor]):
    cfg = path.parent / CONFIG_NAME
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise AdapterError(f"{cfg}: VeRA with bias or modules_to_save is not supported")
    r = config.get("r")
    if not _is_int(r) or r <= 0:  # validate_config says so first; kept for callers of _parse_vera alone
        raise AdapterError(f"{cfg}: r must be an integer >= 1, got {_show(r)}")
    projections = None
    if all(k in tensors for k in VERA_PROJECTIONS):
        projections = tuple(tensors.pop(k) for k in VERA_PROJECTIONS)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _VERA_KEY.match(strip_prefix(key))
        if match is None:
            raise AdapterError(f"{path}: tensor {key}: not a VeRA weight (expected '<module>.vera_lambda_b' / '_d')")
        halves.setdefault(match["module"], {})[match["side"]] = tensor
    if not halves:
        raise AdapterError(f"{path}: no VeRA tensors found")
    modules = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"b", "d"}:
            raise AdapterError(f"{path}: module {module}: vera_lambda_{'d' if 'b' in pair else 'b'} is missing")
        lb, ld = pair["b"], pair["d"]
        if lb.ndim != 1 or ld.shape != (r,) or lb.numel() == 0:
            raise AdapterError(
                f"{path}: module {module}: vera_lambda_b {tuple(lb.shape)} / vera_lambda_d {tuple(ld.shape)} "
                f"disagree with r={r} from {CONFIG_NAME}"
            )
        check_finite(path, module, "vera_lambda_b", lb)
        check_finite(path, module, "vera_lambda_d", ld)
        modules[module] = (lb, ld)
    if projections is not None:
        vA, vB = projections
        max_out = max(lb.shape[0] for lb, _ in modules.values())
        if (vA.ndim != 2 or vB.ndim != 2 or vA.shape[0] != r or vB.shape[1] != r or vB.shape[0] < max_out
                or vA.shape[1] == 0):
            raise AdapterError(
                f"{path}: VeRA projections vera_A {tuple(vA.shape)} / vera_B {tuple(vB.shape)} disagree with "
                f"r={r} and the largest lambda_b ({max_out})"
            )
        check_finite(path, "(shared)", "vera_A", vA)
        check_finite(path, "(shared)", "vera_B", vB)
    size = 1.0 if projections is None else float(projections[0].double().norm() * projections[1].double().norm())
    for module, (lb, ld) in modules.items():  # ||dW|| <= max|lambda_b| max|lambda_d| ||vera_B|| ||vera_A||
        check_update_size(path, module, float(lb.double().abs().max()) * float(ld.double().abs().max()) * size)
    return modules, projections


def open_config(directory: str | Path) -> tuple[Path, dict]:
    """``(directory, config)`` of a PEFT adapter directory: it exists, is a directory, and its
    ``adapter_config.json`` parses and validates (one-line errors naming the path)."""
    directory = Path(directory)
    if not directory.exists():
        raise AdapterError(f"{directory}: no such adapter directory")
    if not directory.is_dir():
        raise AdapterError(f"{directory}: is a file; expected a PEFT adapter directory")
    config = read_config(directory)
    validate_config(directory / CONFIG_NAME, config)
    return directory, config


def read_adapter(directory: str | Path) -> RawAdapter:
    """Read and validate one PEFT LoRA (also DoRA), AdaLoRA or VeRA adapter directory."""
    directory, config = open_config(directory)
    weights = weights_path(directory)
    tensors = read_tensors(weights)
    if not tensors:
        raise AdapterError(f"{weights}: holds no tensors")
    check_floating(weights, tensors)
    dtypes = {t.dtype for t in tensors.values()}
    stored = dtypes.pop() if len(dtypes) == 1 else torch.float32
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "LORA" and config.get("use_dora"):
        from .dora import check_magnitudes, split_magnitudes

        magnitudes = split_magnitudes(weights, tensors)
        lora = _parse_lora(weights, dict(config, use_dora=False), tensors)
        check_magnitudes(weights, lora, magnitudes)
        return RawAdapter(directory, "dora", config, lora=lora, stored_dtype=stored, adapter_type="dora",
                          magnitudes=magnitudes)
    if peft_type == "LORA":
        return RawAdapter(directory, "lora", config, lora=_parse_lora(weights, config, tensors), stored_dtype=stored,
                          adapter_type="lora")
    if peft_type == "ADALORA":
        from .adalora import adalora_as_lora

        lora, lora_config = adalora_as_lora(weights, config, tensors)
        for module, (A, B, s) in lora.items():
            check_update_size(weights, module, abs(s) * float(A.double().norm()) * float(B.double().norm()))
        return RawAdapter(directory, "lora", lora_config, lora=lora, stored_dtype=stored, adapter_type="adalora")
    if peft_type == "VERA":
        vera, projections = _parse_vera(weights, config, tensors)
        return RawAdapter(directory, "vera", config, vera=vera, projections=projections, stored_dtype=stored)
    raise AdapterError(
        f"{directory / CONFIG_NAME}: peft_type {config.get('peft_type')!r} is not supported (LORA, ADALORA and VERA are)"
    )


def vera_projections(prng_key: int, r: int, max_d_out: int, max_d_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Regenerate VeRA's shared projections exactly as peft does from ``projection_prng_key``.

    Returns vera_A ``(r, max_d_in)`` and vera_B ``(max_d_out, r)`` (float32, CPU).
    """
    from peft.tuners.vera.model import _kaiming_init

    generator = torch.Generator(device="cpu").manual_seed(int(prng_key))
    vera_A = _kaiming_init((r, max_d_in), generator=generator)
    vera_B = _kaiming_init((max_d_out, r), generator=generator)
    return vera_A, vera_B
