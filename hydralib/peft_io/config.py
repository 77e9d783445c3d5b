"""The adapter config: file names, ``adapter_config.json`` parsed with errors that name it, and the
validation of every field the loaders read (type and range; one-line errors naming the file and the field)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Mapping

from ..errors import AdapterError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
PREFIX = "base_model.model."
VERA_PROJECTIONS = ("base_model.vera_A", "base_model.vera_B")


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



def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__



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
