"""AdaLoRA directories (peft ``AdaLoraConfig``) read into plain LoRA factors.

peft's AdaLoRA stores, per module, the SVD-like triplet lora_A ``(k, d_in)``,
lora_E ``(k, 1)`` and lora_B ``(d_out, k)``, where k is the number of triplets
kept after pruning. Its update (``SVDLinear.get_delta_weight``) is

    dW = lora_B @ (lora_A * lora_E) * scaling / (ranknum + 1e-5)

with ``scaling = lora_alpha`` (or the layer's rank when ``lora_alpha <= 0``)
and ``ranknum = init_r``: peft creates every layer at ``init_r`` and, when it
resizes a layer to its kept rank on load, copies the old ``ranknum`` back.

``rank_pattern`` in the saved config maps ``<module>.lora_E`` to a boolean
mask of length ``init_r``; ``save_pretrained`` keeps only the rows (columns of
lora_B) where the mask is true, and pruned triplets count as zero. Without a
``rank_pattern`` every layer keeps all ``init_r`` triplets.

The factors returned here are LoRA factors of the kept rank k:
``A = lora_E * lora_A`` ``(k, d_in)``, ``B = lora_B`` ``(d_out, k)`` and
``scaling / (init_r + 1e-5)``. A module whose mask keeps nothing becomes a
rank-1 zero update (plain LoRA has no rank 0). These factors are exact, so the
adapter exports as a plain LoRA of the kept rank that stock peft loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import AdapterError
from .config import CONFIG_NAME, PREFIX, _finite_real, _is_int, _show

#: peft adds this to ``ranknum`` before dividing (``SVDLinear.get_delta_weight``).
RANKNUM_EPS = 1e-5

_SIDES = ("lora_A", "lora_E", "lora_B")


def _strip_mask_key(key: str) -> str:
    """``<module>.lora_E`` (as saved) or ``base_model.model.<module>.lora_E[.adapter]`` -> ``<module>``."""
    key = key[len(PREFIX):] if key.startswith(PREFIX) else key
    head, sep, tail = key.rpartition(".lora_E")
    if not sep or (tail and not tail.startswith(".")):
        return ""
    return head


def validate_adalora_config(cfg: Path, config: dict) -> tuple[int, float, dict[str, list[bool]] | None]:
    """``(init_r, lora_alpha, {module: mask})`` of an AdaLoRA config; one-line errors naming ``cfg`` and the field."""
    init_r = config.get("init_r", 12)
    if not _is_int(init_r) or init_r < 1:
        raise AdapterError(f"{cfg}: init_r must be an integer >= 1, got {_show(init_r)}")
    alpha = config.get("lora_alpha", 8)
    if not _finite_real(alpha):
        raise AdapterError(f"{cfg}: lora_alpha must be a finite number, got {_show(alpha)}")
    for flag in ("use_dora", "use_rslora", "lora_bias"):
        if config.get(flag):
            raise AdapterError(f"{cfg}: {flag}=true is not supported for AdaLoRA")
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise AdapterError(f"{cfg}: AdaLoRA with bias or modules_to_save is not supported")
    pattern = config.get("rank_pattern")
    if pattern is None or pattern == {}:
        return init_r, float(alpha), None
    if not isinstance(pattern, dict):
        raise AdapterError(f"{cfg}: rank_pattern must be an object {{module.lora_E: mask}}, got {_show(pattern)}")
    masks = {}
    for key, mask in pattern.items():
        module = _strip_mask_key(str(key))
        if not module:
            raise AdapterError(f"{cfg}: rank_pattern[{_show(key)}]: the key is not '<module>.lora_E'")
        if not isinstance(mask, list) or not all(isinstance(v, bool) for v in mask):
            raise AdapterError(f"{cfg}: rank_pattern[{_show(key)}] must be a list of true/false, got {_show(mask)}")
        if len(mask) != init_r:
            raise AdapterError(f"{cfg}: rank_pattern[{_show(key)}] has {len(mask)} entries, not init_r={init_r}")
        masks[module] = mask
    return init_r, float(alpha), masks


def parse_adalora(path: Path, config: dict, tensors: dict[str, torch.Tensor]):
    """LoRA factors ``{module: (A (k, d_in), B (d_out, k), scaling)}`` and kept ranks ``{module: k}``.

    ``path`` is the weights file; its rows must agree with the config's ``rank_pattern`` masks.
    """
    cfg = path.parent / CONFIG_NAME
    init_r, alpha, masks = validate_adalora_config(cfg, config)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stripped = key[len(PREFIX):] if key.startswith(PREFIX) else key
        module, _, side = stripped.rpartition(".")
        if side not in _SIDES or not module:
            if side == "ranknum":
                continue  # older peft versions saved it; peft recomputes it as init_r
            raise AdapterError(f"{path}: tensor {key}: not an AdaLoRA weight (expected '<module>.lora_A' / "
                               "'.lora_E' / '.lora_B')")
        parts.setdefault(module, {})[side] = tensor
    if not parts:
        raise AdapterError(f"{path}: no AdaLoRA tensors found")
    if masks is not None:
        unknown = sorted(set(masks) - set(parts))
        if unknown:
            raise AdapterError(f"{cfg}: rank_pattern names module {unknown[0]} that {path.name} does not hold")
    factors, kept = {}, {}
    for module, group in sorted(parts.items()):
        missing = [s for s in _SIDES if s not in group]
        if missing:
            raise AdapterError(f"{path}: module {module}: {missing[0]} is missing")
        A, E, B = group["lora_A"], group["lora_E"], group["lora_B"]
        k = int(A.shape[0]) if A.ndim == 2 else -1
        if A.ndim != 2 or B.ndim != 2 or tuple(E.shape) != (k, 1) or B.shape[1] != k:
            raise AdapterError(f"{path}: module {module}: lora_A {tuple(A.shape)}, lora_E {tuple(E.shape)}, "
                               f"lora_B {tuple(B.shape)} are not (k, d_in), (k, 1), (d_out, k)")
        expected = init_r if masks is None or module not in masks else sum(masks[module])
        if k != expected:
            where = "init_r" if masks is None or module not in masks else "its rank_pattern mask"
            raise AdapterError(f"{path}: module {module}: {k} triplets stored but {where} keeps {expected}")
        for name, t in (("lora_A", A), ("lora_E", E), ("lora_B", B)):
            if not torch.isfinite(t.float()).all():
                raise AdapterError(f"{path}: module {module}: {name} has NaN/Inf values")
        if A.shape[1] == 0 or B.shape[0] == 0:
            raise AdapterError(f"{path}: module {module}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} are empty")
        scaling = (alpha if alpha > 0 else float(k)) / (init_r + RANKNUM_EPS)
        if k == 0:  # everything pruned: a zero update, stored as rank 1
            A, B, kept[module] = torch.zeros(1, A.shape[1], dtype=A.dtype), torch.zeros(B.shape[0], 1, dtype=B.dtype), 0
        else:
            A, B, kept[module] = E.float() * A.float(), B.float(), k
        factors[module] = (A, B, float(scaling))
    return factors, kept


def adalora_as_lora(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """``(factors, lora_config)``: :func:`parse_adalora`'s factors and a peft ``LoraConfig`` dict that
    reproduces them (kept ranks in ``rank_pattern``, scalings in ``alpha_pattern``), so the adapter
    saves as a plain LoRA that stock peft loads."""
    from .write import lora_config_for

    factors, _ = parse_adalora(path, config, tensors)
    fan = bool(config.get("fan_in_fan_out", False))
    lora_config = lora_config_for(factors, config.get("base_model_name_or_path"), fan_in_fan_out=fan)
    return factors, lora_config
