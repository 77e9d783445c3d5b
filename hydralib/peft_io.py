"""Read and write PEFT adapter directories (LoRA and VeRA), safely.

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

Untrusted files are never unpickled: ``.bin`` checkpoints are refused.

Example
-------
>>> raw = read_adapter("adapters/grammar-en")          # doctest: +SKIP
>>> A, B, s = raw.lora["model.layers.0.self_attn.q_proj"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from .atomic import atomic_dir
from .errors import AdapterError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
PREFIX = "base_model.model."
VERA_PROJECTIONS = ("base_model.vera_A", "base_model.vera_B")

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
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

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def modules(self) -> list[str]:
        return sorted(self.lora or self.vera)

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))


# ----------------------------------------------------------------------------- reading


def read_config(directory: Path) -> dict:
    """Parse ``adapter_config.json`` of ``directory`` with errors that name the file."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{path}: missing adapter config (is {directory} a PEFT adapter directory?)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdapterError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise AdapterError(f"{path}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise AdapterError(f"{path}: invalid JSON ({_first_line(exc)})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle); corrupt or truncated files raise AdapterError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError...
        raise AdapterError(f"{path}: corrupt or truncated safetensors file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_floating(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse tensors that are not floating point (integer codes, bool, complex): a PEFT adapter stores real
    factors; quantized storage is hydralib's own container (:func:`hydralib.compress.load_compressed`)."""
    for key, tensor in sorted(tensors.items()):
        if not tensor.dtype.is_floating_point:
            raise AdapterError(
                f"{path}: tensor {key}: dtype {str(tensor.dtype).removeprefix('torch.')} is not floating point "
                "(PEFT adapters store real floating-point factors)"
            )


def _weights_path(directory: Path) -> Path:
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


def _check_finite(path: Path, module: str, name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype.itemsize < 2:  # float8: torch.isfinite is not implemented for it
        tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise AdapterError(f"{path}: module {module}: {name} has {bad} NaN/Inf values")


# The largest bound |s| ||B||_F ||A||_F on the norm of an update dW = s B A that hydralib accepts: squared norms
# (energies, Gram matrices) of such updates, summed over many modules and tasks, stay finite in float32.
MAX_UPDATE_NORM = 1e15


def _check_update_size(path: Path, module: str, bound: float) -> None:
    """Refuse an update whose norm bound ``bound`` (computed in float64) exceeds :data:`MAX_UPDATE_NORM`."""
    if not bound <= MAX_UPDATE_NORM:
        raise AdapterError(f"{path}: module {module}: the update is too large for float32 arithmetic "
                           f"(norm up to {bound:.3g} > {MAX_UPDATE_NORM:.0e})")


# ----------------------------------------------------------------------------- config fields


def _show(value) -> str:
    """``value`` as short one-line JSON text for messages (``NaN``, ``Infinity``, ``true``, ``"8"``)."""
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True, default=str)
    except (ValueError, TypeError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_real(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond the float range
        return False


def _check_rank_value(cfg: Path, field_name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise AdapterError(f"{cfg}: {field_name} must be an integer >= 1, got {_show(value)}")


def _check_alpha_value(cfg: Path, field_name: str, value) -> None:
    # peft computes scaling = lora_alpha / r (or / sqrt(r)) and checks nothing else: any finite real number
    if not _finite_real(value):
        raise AdapterError(f"{cfg}: {field_name} must be a finite number, got {_show(value)}")


def _check_pattern(cfg: Path, field_name: str, pattern, check_value) -> None:
    """``rank_pattern``/``alpha_pattern``: null or an object {regex: value}, each key a valid regex."""
    if pattern is None:
        return
    if not isinstance(pattern, dict):
        raise AdapterError(f"{cfg}: {field_name} must be an object {{module regex: value}}, got {_show(pattern)}")
    for key, value in pattern.items():
        name = f"{field_name}[{_show(key)}]"
        try:
            re.compile(rf"(.*\.)?({key})$")
        except (re.error, RecursionError, OverflowError) as exc:
            raise AdapterError(f"{cfg}: {name}: the key is not a valid regular expression ({_first_line(exc)})") from None
        check_value(cfg, name, value)


def _check_flag(cfg: Path, config: dict, field_name: str) -> None:
    value = config.get(field_name)
    if value is not None and not isinstance(value, bool):
        raise AdapterError(f"{cfg}: {field_name} must be true or false, got {_show(value)}")


def validate_config(cfg: Path, config: dict) -> None:
    """Check the type and range of every field the loaders read; errors name ``cfg`` and the field in one line.

    LoRA: ``r`` and ``rank_pattern`` values are integers >= 1, ``lora_alpha`` and ``alpha_pattern`` values
    finite numbers (peft allows any), pattern keys valid regular expressions. VeRA: ``r`` an integer >= 1,
    ``projection_prng_key`` an integer in [0, 2**64) (torch's seed range). Both: the flags the loaders read
    are true/false, ``base_model_name_or_path`` a string or null. ``true``/``false`` are not numbers.
    """
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise AdapterError(f"{cfg}: base_model_name_or_path must be a string or null, got {_show(base)}")
    for flag in ("fan_in_fan_out", "use_rslora", "use_dora", "lora_bias"):
        _check_flag(cfg, config, flag)
    kind = str(config.get("peft_type", "")).upper()  # another type is refused by read_adapter
    if kind == "LORA":
        if "r" in config:
            _check_rank_value(cfg, "r", config["r"])
        if "lora_alpha" in config:
            _check_alpha_value(cfg, "lora_alpha", config["lora_alpha"])
        _check_pattern(cfg, "rank_pattern", config.get("rank_pattern"), _check_rank_value)
        _check_pattern(cfg, "alpha_pattern", config.get("alpha_pattern"), _check_alpha_value)
    elif kind == "VERA":
        if "r" not in config:
            raise AdapterError(f"{cfg}: VeRA needs the rank r")
        _check_rank_value(cfg, "r", config["r"])
        key = config.get("projection_prng_key", 0)
        if not _is_int(key) or not 0 <= key < 2**64:
            raise AdapterError(f"{cfg}: projection_prng_key must be an integer in [0, 2**64), got {_show(key)}")
        _check_flag(cfg, config, "save_projection")


def _pattern_value(pattern: Mapping | None, module: str, default):
    """Look ``module`` up in a peft ``rank_pattern``/``alpha_pattern`` the way peft does."""
    if not pattern:
        return default
    from peft.utils.other import get_pattern_key

    key = get_pattern_key(list(pattern.keys()), module)
    return pattern.get(key, default)


def lora_rank_alpha_scaling(config: dict, module: str) -> tuple[int, float, float]:
    """Rank, alpha and scaling that peft gives ``module`` under ``config``."""
    r = _pattern_value(config.get("rank_pattern"), module, config.get("r", 8))
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    if not _is_int(r) or r <= 0:
        raise ValueError(f"rank {_show(r)} must be an integer >= 1")
    if not _finite_real(alpha):
        raise ValueError(f"alpha {_show(alpha)} must be a finite number")
    r, alpha = int(r), float(alpha)
    scaling = alpha / math.sqrt(r) if config.get("use_rslora", False) else alpha / r
    return r, alpha, scaling


def _refuse_unsupported_lora(path: Path, config: dict) -> None:
    cfg = path / CONFIG_NAME
    if config.get("use_dora"):
        raise AdapterError(
            f"{cfg}: DoRA adapters are refused: the magnitude vector makes the update non-linear "
            "in the factors, so there is no dW = s B A to analyse or merge"
        )
    if config.get("lora_bias"):
        raise AdapterError(f"{cfg}: lora_bias=True is refused: the extra bias is not part of dW = s B A")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{cfg}: bias={config['bias']!r} is refused: only bias-free LoRA (bias='none') is supported")
    if config.get("modules_to_save"):
        raise AdapterError(
            f"{cfg}: modules_to_save={config['modules_to_save']!r} is refused: fully trained modules "
            "are not low-rank and cannot be merged as dW = s B A"
        )


def _strip(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def _parse_lora(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> dict:
    _refuse_unsupported_lora(path.parent, config)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stripped = _strip(key)
        match = _LORA_KEY.match(stripped)
        if match is None:
            if "lora_magnitude_vector" in key:
                raise AdapterError(f"{path}: tensor {key}: DoRA magnitude vectors are refused (the update is non-linear)")
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
        _check_finite(path, module, "lora_A", A)
        _check_finite(path, module, "lora_B", B)
        _check_update_size(path, module, abs(scaling) * float(A.double().norm()) * float(B.double().norm()))
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
        match = _VERA_KEY.match(_strip(key))
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
        _check_finite(path, module, "vera_lambda_b", lb)
        _check_finite(path, module, "vera_lambda_d", ld)
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
        _check_finite(path, "(shared)", "vera_A", vA)
        _check_finite(path, "(shared)", "vera_B", vB)
    size = 1.0 if projections is None else float(projections[0].double().norm() * projections[1].double().norm())
    for module, (lb, ld) in modules.items():  # ||dW|| <= max|lambda_b| max|lambda_d| ||vera_B|| ||vera_A||
        _check_update_size(path, module, float(lb.double().abs().max()) * float(ld.double().abs().max()) * size)
    return modules, projections


def read_adapter(directory: str | Path) -> RawAdapter:
    """Read and validate one PEFT LoRA or VeRA adapter directory."""
    directory = Path(directory)
    if not directory.exists():
        raise AdapterError(f"{directory}: no such adapter directory")
    if not directory.is_dir():
        raise AdapterError(f"{directory}: is a file; expected a PEFT adapter directory")
    config = read_config(directory)
    validate_config(directory / CONFIG_NAME, config)
    weights = _weights_path(directory)
    tensors = read_tensors(weights)
    if not tensors:
        raise AdapterError(f"{weights}: holds no tensors")
    check_floating(weights, tensors)
    dtypes = {t.dtype for t in tensors.values()}
    stored = dtypes.pop() if len(dtypes) == 1 else torch.float32
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "LORA":
        return RawAdapter(directory, "lora", config, lora=_parse_lora(weights, config, tensors), stored_dtype=stored)
    if peft_type == "VERA":
        vera, projections = _parse_vera(weights, config, tensors)
        return RawAdapter(directory, "vera", config, vera=vera, projections=projections, stored_dtype=stored)
    raise AdapterError(
        f"{directory / CONFIG_NAME}: peft_type {config.get('peft_type')!r} is not supported (LORA and VERA are)"
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


# ----------------------------------------------------------------------------- writing


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
