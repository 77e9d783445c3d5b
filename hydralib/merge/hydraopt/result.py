"""HydraOpt results: per-module solutions over an adapter set, and saving, loading and exporting them.

:class:`HydraOptResult` holds, per module, a :class:`ModuleResult` (the shared
factor and the K heads) and the task -> head mapping; ``factors(task,
module)`` gives the LoRA a task runs.

A bundle is a directory with two files:

* ``hydraopt.safetensors``: per module the shared factor once and the K heads
  stacked, keyed ``<module>.shared.lora_a`` ``(r', d_in)`` and
  ``<module>.heads.lora_b`` ``(K, d_out, r')`` for side A, or
  ``<module>.shared.lora_b`` ``(d_out, r')`` and ``<module>.heads.lora_a``
  ``(K, r', d_in)`` for side B. Head k of a module is ``heads[k]``; the task ->
  head mapping is in the JSON.
* ``hydraopt.json``: base model, target modules and their shapes, tasks, heads,
  task -> head, rank, side, solver, weighting, loss, floor (spread +
  truncation) per module and in total, storage, and the sha256 of the tensors.

Bundles are written to a temporary directory and moved into place
(``os.replace``); an existing path is replaced only with ``overwrite=True``.
The same result gives the same bytes. Loading reads safetensors only (never a
pickle) and checks every shape against the JSON, with errors that name the
file and the module. Storage is counted from the bundle's tensors.

:func:`export_peft` writes one standard PEFT LoRA directory per task (rank r',
``lora_alpha = r'`` so the scaling is 1, weights A' and the task's head) that
stock ``peft`` loads.

Example
-------
>>> import tempfile, os
>>> from hydralib.synthetic import random_lora_factors
>>> from hydralib.merge.hydraopt import hydraopt
>>> factors = random_lora_factors(3, {"layers.0.q_proj": (12, 10)}, rank=2, seed=0)
>>> result = hydraopt(factors, heads=2, rank=3, progress=False)
>>> path = os.path.join(tempfile.mkdtemp(), "bundle")
>>> _ = save_bundle(result, path)
>>> again = load_bundle(path)
>>> again.task_to_head == result.task_to_head, bundle_storage(path) == result.storage
(True, True)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ...atomic import atomic_dir, atomic_entries, check_writable
from ...errors import AdapterError
from .problem import _as_adapter_set

__all__ = [
    "ModuleResult",
    "HydraOptResult",
    "TENSORS_NAME",
    "META_NAME",
    "BUNDLE_FORMAT",
    "bundle_tensors",
    "bundle_meta",
    "save_bundle",
    "load_bundle",
    "bundle_storage",
    "export_peft",
]


@dataclass
class ModuleResult:
    """HydraOpt at one module, in the orientation of ``side``.

    Side ``"A"``: ``shared`` is lora_a A' ``(r', d_in)`` and ``heads`` the lora_b
    B'_k stacked ``(K, d_out, r')``. Side ``"B"``: ``shared`` is lora_b B'
    ``(d_out, r')`` and ``heads`` the lora_a A'_k stacked ``(K, r', d_in)``.
    Either way head k's update is ``lora_b @ lora_a`` (scaling 1). ``loss``,
    ``floor = spread + truncation`` and ``energy = sum_i w_i ||dW_i||^2`` are
    weighted sums of squares; ``weights`` ``(N,)`` are the w_i used.
    """

    module: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    spread: float
    truncation: float
    energy: float
    weights: torch.Tensor
    history: list[float] | None = None
    steps: int | None = None
    seconds: float = 0.0

    @property
    def storage(self) -> int:
        """Numbers stored: the shared factor once plus the K heads."""
        return int(self.shared.numel() + self.heads.numel())


@dataclass
class HydraOptResult:
    """A HydraOpt result over all modules of an adapter set.

    ``modules`` maps module name -> :class:`ModuleResult`; ``task_to_head``
    maps every task to one of ``head_names``. ``factors(task, module)`` gives
    the LoRA ``(lora_a (r', d_in), lora_b (d_out, r'), 1.0)`` that task runs.
    """

    side: str
    rank: int
    solver: str
    weighting: str
    tasks: list[str]
    head_names: list[str]
    task_to_head: dict[str, str]
    modules: dict[str, ModuleResult]
    base_model: str | None = None
    grouping: str = ""
    metadata: dict[str, dict] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    fan_in_fan_out: bool = False  # GPT-2 style Conv1D modules: exports say so in their adapter_config.json

    # ---------------------------------------------------------------- summaries
    @property
    def n_heads(self) -> int:
        return len(self.head_names)

    @property
    def total_loss(self) -> float:
        return float(sum(m.loss for m in self.modules.values()))

    @property
    def total_floor(self) -> float:
        return float(sum(m.floor for m in self.modules.values()))

    @property
    def total_spread(self) -> float:
        return float(sum(m.spread for m in self.modules.values()))

    @property
    def total_truncation(self) -> float:
        return float(sum(m.truncation for m in self.modules.values()))

    @property
    def total_energy(self) -> float:
        return float(sum(m.energy for m in self.modules.values()))

    @property
    def storage(self) -> int:
        """Numbers stored, counted from the tensors (shared factors once, every head)."""
        return int(sum(m.storage for m in self.modules.values()))

    @property
    def storage_per_module(self) -> dict[str, int]:
        return {name: m.storage for name, m in self.modules.items()}

    @property
    def loss_history(self) -> dict[str, list[float]]:
        """Adam's per-step losses by module (empty for the exact solver)."""
        return {name: m.history for name, m in self.modules.items() if m.history is not None}

    def relative_storage(self, adapters) -> float:
        """Storage divided by that of keeping every adapter of ``adapters`` (r (d_in + d_out) per task and module)."""
        aset = _as_adapter_set(adapters)
        total = sum(aset.rank(t, m) * sum(aset.shape(m)) for t in aset.tasks for m in aset.modules)
        return self.storage / total

    def summary(self) -> dict:
        """JSON-ready numbers: loss, floor, spread, truncation, energy, storage, heads."""
        return {
            "side": self.side, "rank": self.rank, "solver": self.solver, "weighting": self.weighting,
            "heads": self.n_heads, "grouping": self.grouping, "loss": self.total_loss, "floor": self.total_floor,
            "spread": self.total_spread, "truncation": self.total_truncation, "energy": self.total_energy,
            "storage": self.storage,
        }

    # ---------------------------------------------------------------- per-task views
    def head_index(self, task: str) -> int:
        if task not in self.task_to_head:
            raise KeyError(f"unknown task {task!r}")
        return self.head_names.index(self.task_to_head[task])

    def factors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(lora_a (r', d_in), lora_b (d_out, r'), 1.0)`` for ``task`` at ``module`` (views, no copy)."""
        m = self.modules[module]
        k = self.head_index(task)
        if self.side == "A":
            return m.shared, m.heads[k], 1.0
        return m.heads[k], m.shared, 1.0

    def delta(self, task: str, module: str) -> torch.Tensor:
        """Dense reconstructed ``dW`` ``(d_out, d_in)`` of ``task`` (forms the full matrix)."""
        A, B, s = self.factors(task, module)
        return s * (B @ A)

    def to_adapter_set(self, tasks: Sequence[str] | None = None):
        """An :class:`~hydralib.adapters.AdapterSet` of the reconstructed per-task LoRAs (rank r', scaling 1)."""
        from ...adapters import AdapterSet

        tasks = list(tasks) if tasks is not None else self.tasks
        factors = {t: {m: tuple(x.contiguous() if torch.is_tensor(x) else x for x in self.factors(t, m))
                       for m in self.modules} for t in tasks}
        return AdapterSet.from_factors(factors, base_model=self.base_model, fan_in_fan_out=self.fan_in_fan_out,
                                       metadata={t: self.metadata.get(t, {}) for t in tasks})

    def save(self, path, overwrite: bool = False):
        """Save as one bundle (see :func:`save_bundle`)."""
        return save_bundle(self, path, overwrite=overwrite)


# ============================================================================= bundles

TENSORS_NAME = "hydraopt.safetensors"
META_NAME = "hydraopt.json"
BUNDLE_FORMAT = "hydralib.hydraopt"
BUNDLE_VERSION = 1


def _keys(module: str, side: str) -> tuple[str, str]:
    """Tensor names of the shared factor and of the stacked heads of ``module``."""
    if side == "A":
        return f"{module}.shared.lora_a", f"{module}.heads.lora_b"
    return f"{module}.shared.lora_b", f"{module}.heads.lora_a"


def _expected_shapes(side: str, rank: int, n_heads: int, d_out: int, d_in: int) -> tuple[tuple, tuple]:
    if side == "A":
        return (rank, d_in), (n_heads, d_out, rank)
    return (d_out, rank), (n_heads, rank, d_in)


def _module_shape(m: ModuleResult, side: str) -> tuple[int, int]:
    """``(d_out, d_in)`` of a module result."""
    if side == "A":
        return int(m.heads.shape[1]), int(m.shared.shape[1])
    return int(m.shared.shape[0]), int(m.heads.shape[2])


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def bundle_tensors(result: HydraOptResult, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The bundle's tensors ``{name: tensor}`` (contiguous, CPU, in ``dtype`` or as they are)."""
    out = {}
    for module, m in result.modules.items():
        k_shared, k_heads = _keys(module, result.side)
        out[k_shared] = m.shared.detach().to("cpu", dtype or m.shared.dtype).contiguous()
        out[k_heads] = m.heads.detach().to("cpu", dtype or m.heads.dtype).contiguous()
    return out


def save_bundle(
    result: HydraOptResult,
    path: str | Path,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``result`` as a bundle directory at ``path`` (atomic; refuses to overwrite unless asked).

    ``dtype`` stores the tensors in another dtype (e.g. ``torch.float16``);
    default: as they are (float32). Returns the path.
    """
    from safetensors.torch import save

    if result.side not in ("A", "B"):
        raise ValueError(f"save_bundle: side must be 'A' or 'B', got {result.side!r}")
    tensors = bundle_tensors(result, dtype)
    # one metadata key only: safetensors writes a multi-key header map in random order (bytes would differ)
    blob = save(tensors, metadata={"format": f"{BUNDLE_FORMAT}/{BUNDLE_VERSION}"})
    dtype_name = str(next(iter(tensors.values())).dtype).replace("torch.", "") if tensors else None
    meta = bundle_meta(result, dtype_name, hashlib.sha256(blob).hexdigest())
    text = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / TENSORS_NAME).write_bytes(blob)
        (tmp / META_NAME).write_text(text, encoding="utf-8")
    return Path(path)


def bundle_meta(result: HydraOptResult, dtype_name: str | None, sha256: str) -> dict:
    """The JSON of a bundle of ``result`` whose tensors (in ``dtype_name``) hash to ``sha256``; reads only shapes
    (the tensors may be on the ``meta`` device, as in a streamed bundle)."""
    modules = {}
    for module, m in result.modules.items():
        d_out, d_in = _module_shape(m, result.side)
        modules[module] = {
            "d_out": d_out, "d_in": d_in, "loss": _finite(m.loss), "floor": _finite(m.floor),
            "spread": _finite(m.spread), "truncation": _finite(m.truncation), "energy": _finite(m.energy),
            "storage": m.storage, "steps": m.steps,
        }
    meta = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "base_model": result.base_model,
        "fan_in_fan_out": bool(result.fan_in_fan_out),
        "side": result.side,
        "rank": int(result.rank),
        "solver": result.solver,
        "weighting": result.weighting,
        "grouping": result.grouping,
        "tasks": list(result.tasks),
        "heads": list(result.head_names),
        "task_to_head": dict(result.task_to_head),
        "target_modules": list(result.modules),
        "modules": modules,
        "loss": _finite(result.total_loss),
        "floor": _finite(result.total_floor),
        "spread": _finite(result.total_spread),
        "truncation": _finite(result.total_truncation),
        "energy": _finite(result.total_energy),
        "storage": result.storage,
        "dtype": dtype_name,
        "metadata": result.metadata,
        "options": result.options,
        "tensors_sha256": sha256,
    }
    return meta


def _read_meta(path: Path) -> dict:
    meta_path = path / META_NAME
    if not path.is_dir():
        raise AdapterError(f"{path}: no such bundle directory")
    if not meta_path.is_file():
        raise AdapterError(f"{meta_path}: missing bundle metadata (is {path} a HydraOpt bundle?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{meta_path}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise AdapterError(f"{meta_path}: not a HydraOpt bundle (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != BUNDLE_VERSION:
        raise AdapterError(f"{meta_path}: bundle version {meta.get('version')!r} is not supported (expected {BUNDLE_VERSION})")
    for key in ("side", "rank", "tasks", "heads", "task_to_head", "target_modules", "modules"):
        if key not in meta:
            raise AdapterError(f"{meta_path}: missing field {key!r}")
    if meta["side"] not in ("A", "B"):
        raise AdapterError(f"{meta_path}: side must be 'A' or 'B', got {meta['side']!r}")
    unknown = sorted(set(meta["task_to_head"].values()) - set(meta["heads"]))
    if unknown or set(meta["task_to_head"]) != set(meta["tasks"]):
        raise AdapterError(f"{meta_path}: task_to_head does not map every task to a listed head")
    return meta


def load_bundle(path: str | Path, device: str | torch.device = "cpu", verify_hash: bool = True) -> HydraOptResult:
    """Load a bundle written by :func:`save_bundle` into a :class:`HydraOptResult`.

    Reads safetensors only. Checks the sha256 of the tensors (``verify_hash``),
    that every target module has its shared factor and heads with the shapes
    the JSON implies, that no tensor is extra, and that values are finite.
    Errors name the file and the module. Adam loss histories are not stored.
    """
    from ...peft_io import read_tensors

    path = Path(path)
    meta = _read_meta(path)
    tensor_path = path / TENSORS_NAME
    if not tensor_path.is_file():
        raise AdapterError(f"{tensor_path}: missing bundle tensors")
    if verify_hash:
        digest = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
        if meta.get("tensors_sha256") and digest != meta["tensors_sha256"]:
            raise AdapterError(f"{tensor_path}: sha256 {digest[:12]}... differs from {META_NAME} ({meta['tensors_sha256'][:12]}...); the file was changed or corrupted")
    tensors = read_tensors(tensor_path)
    side, rank, n_heads = meta["side"], int(meta["rank"]), len(meta["heads"])
    seen = set()
    modules = {}
    for module in meta["target_modules"]:
        info = meta["modules"].get(module)
        if info is None:
            raise AdapterError(f"{path / META_NAME}: module {module}: no entry in 'modules'")
        k_shared, k_heads = _keys(module, side)
        exp_shared, exp_heads = _expected_shapes(side, rank, n_heads, int(info["d_out"]), int(info["d_in"]))
        for key, expected in ((k_shared, exp_shared), (k_heads, exp_heads)):
            if key not in tensors:
                raise AdapterError(f"{tensor_path}: module {module}: tensor {key} is missing")
            got = tuple(tensors[key].shape)
            if got != expected:
                raise AdapterError(f"{tensor_path}: module {module}: tensor {key} has shape {got}, expected {expected} "
                                   f"(side {side}, rank {rank}, {n_heads} heads, d_out {info['d_out']}, d_in {info['d_in']})")
            if not torch.isfinite(tensors[key]).all():
                raise AdapterError(f"{tensor_path}: module {module}: tensor {key} has NaN/Inf values")
            seen.add(key)
        nan = float("nan")
        modules[module] = ModuleResult(
            module, tensors[k_shared].to(device), tensors[k_heads].to(device),
            loss=_num(info.get("loss"), nan), floor=_num(info.get("floor"), nan), spread=_num(info.get("spread"), nan),
            truncation=_num(info.get("truncation"), nan), energy=_num(info.get("energy"), nan),
            weights=torch.empty(0, dtype=torch.float64), steps=info.get("steps"),
        )
    extra = sorted(set(tensors) - seen)
    if extra:
        raise AdapterError(f"{tensor_path}: tensors {extra[:3]} belong to no target module in {META_NAME}")
    return HydraOptResult(
        side=side, rank=rank, solver=meta.get("solver", ""), weighting=meta.get("weighting", ""),
        tasks=list(meta["tasks"]), head_names=list(meta["heads"]), task_to_head=dict(meta["task_to_head"]),
        modules=modules, base_model=meta.get("base_model"), grouping=meta.get("grouping", ""),
        metadata=dict(meta.get("metadata") or {}), options=dict(meta.get("options") or {}),
        fan_in_fan_out=meta.get("fan_in_fan_out") is True,
    )


def _num(value, default: float) -> float:
    return float(value) if value is not None else default


def bundle_storage(path: str | Path) -> int:
    """Numbers stored in a bundle, counted from its tensors' shapes (reads only the safetensors header)."""
    from safetensors import safe_open

    tensor_path = Path(path) / TENSORS_NAME
    if not tensor_path.is_file():
        raise AdapterError(f"{tensor_path}: missing bundle tensors")
    try:
        with safe_open(str(tensor_path), framework="pt") as f:
            return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    except Exception as exc:  # safetensors raises its own error types
        raise AdapterError(f"{tensor_path}: corrupt safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def export_peft(
    result: HydraOptResult | str | Path,
    out_dir: str | Path,
    tasks: Sequence[str] | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[str, Path]:
    """Write one standard PEFT LoRA directory per task: ``out_dir/<task>``.

    Each holds the task's factors ``(A' (r', d_in), B'_g(i) (d_out, r'), scaling 1)``
    for side A (``(A'_g(i), B')`` for side B), with rank r' and
    ``lora_alpha = r'``, written by :meth:`~hydralib.adapters.AdapterSet.save_peft`
    so stock ``peft`` loads it. ``result`` may be a bundle path. Every target
    directory is checked before anything is written; all of them appear in
    ``out_dir`` at once (:func:`~hydralib.atomic.atomic_entries`).
    Returns ``{task: directory}``.
    """
    if not isinstance(result, HydraOptResult):
        result = load_bundle(result)
    tasks = list(tasks) if tasks is not None else list(result.tasks)
    out_dir = Path(out_dir)
    targets = export_targets(tasks, result.task_to_head, out_dir, overwrite)
    aset = result.to_adapter_set(tasks)
    with atomic_entries(out_dir, tasks, overwrite=overwrite) as tmp:
        for task in tasks:
            aset.save_peft(task, tmp / task, dtype=dtype)
    return targets


def export_targets(tasks, task_to_head, out_dir: Path, overwrite: bool) -> dict:
    """``{task: checked directory out_dir/task}`` for an export; refuses unknown tasks and unusable names."""
    unknown = [t for t in tasks if t not in task_to_head]
    if unknown:
        raise ValueError(f"export_peft: unknown tasks {unknown[:5]}")
    targets = {}
    for task in tasks:
        if not task or "/" in task or "\\" in task or task in (".", ".."):
            raise ValueError(f"export_peft: task name {task!r} cannot be a directory name")
        targets[task] = check_writable(Path(out_dir) / task, overwrite)
    return targets
