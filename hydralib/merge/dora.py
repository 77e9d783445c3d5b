"""Merging DoRA adapters: HydraOpt and the dW baselines on the direction updates, plus magnitudes.

A DoRA adapter (see :mod:`hydralib.peft_io.dora`) runs, per module, the weight

    W_i = m_i[:, None] * V_i / ||V_i||_row,    V_i = W0 + s_i B_i A_i    (d_out, d_in)

with the magnitude m_i ``(d_out,)``. An :class:`~hydralib.adapters.AdapterSet`
of DoRA adapters holds the direction factors ``(A_i, B_i, s_i)`` (so
``factors``/``delta`` and every analysis see the *direction update*
``s_i B_i A_i``) and the magnitudes in ``aset.magnitudes[task][module]``.

Both merges work on the direction updates with the LoRA machinery and keep a
magnitude per task (HydraOpt) or one averaged magnitude (baselines). Either way
the result is judged in weight space, by the relative reconstruction loss

    sum_i,modules ||W'_i - W_i||_F^2 / sum_i,modules ||W_i - W0||_F^2,

which needs W0: every function here takes ``base_model=`` (a torch model, a
model directory or a state dict; :func:`hydralib.peft_io.base_weights`) and
refuses to run without it.

HydraOpt magnitudes, per task and module, after the fit of A' and the heads
(the new direction update D'_i, V'_i = W0 + D'_i, unit rows U'_i = V'_i / ||V'_i||_row):

* ``"kept"``: m_i as trained;
* ``"refit"``: the row norms of the original W_i, so W'_i has W_i's row norms.
  Since the rows of U'_i are unit vectors, W_i's row norms are |m_i|: refit equals
  kept wherever m_i >= 0 (peft initialises m as a row norm, so it is positive in practice);
* ``"lstsq"``: the least-squares magnitude ``m'_j = <W_i[j], U'_i[j]>``, which minimises
  ||m' * U'_i - W_i||_F over m' row by row, so it is never worse than kept or refit.

Measured on synthetic DoRA adapters of a tiny Llama (``hydralib.bench.dora``),
lstsq has the lowest loss, so it is the default; the result records the loss of
all three. The baselines (TA, TIES, DARE...) merge the direction updates with
:func:`~.baselines.merge_adapters` and take the plain mean of the magnitudes over
tasks: one choice among several (a weighted mean, or a least-squares magnitude
against all W_i, would be others).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..atomic import atomic_entries, check_writable
from ..errors import AdapterError
from ..peft_io import base_weights, row_norms
from .baselines import MergedLoRA, merge_adapters
from .hydraopt import HydraOptResult, hydraopt

__all__ = ["MAGNITUDE_FITS", "MergedDoRA", "DoraHydraResult", "check_dora_set", "directions", "dora_base_weights",
           "fit_magnitudes", "merge_dora", "hydraopt_dora", "reconstruction_loss"]

#: How HydraOpt sets each task's magnitude after the fit (see the module docstring).
MAGNITUDE_FITS = ("kept", "refit", "lstsq")


def check_dora_set(aset, base_model, where: str) -> None:
    """Refuse (one line) a set that is not DoRA, or a DoRA merge without ``base_model``."""
    from ..adapters import AdapterSet

    if not isinstance(aset, AdapterSet) or not aset.magnitudes:
        raise AdapterError(f"{where}: expects an AdapterSet of DoRA adapters (load_adapters of use_dora=true directories)")
    if base_model is None:
        raise AdapterError(f"{where}: a DoRA merge needs base_model= (a model, a model directory or a state dict): "
                           "the DoRA weight divides by the row norms of W0 + s B A")


def dora_base_weights(aset, base_model) -> dict[str, torch.Tensor]:
    """W0 ``(d_out, d_in)`` of every module of ``aset`` from ``base_model``."""
    shapes = {m: (*aset.shape(m), aset.module_info(m).fan_in_fan_out) for m in aset.modules}
    return base_weights(base_model, shapes)


def directions(aset):
    """The direction updates of a DoRA set as a plain LoRA :class:`~hydralib.adapters.AdapterSet` (no magnitudes)."""
    from ..adapters import AdapterSet

    return AdapterSet.from_factors({t: {m: aset.factors(t, m) for m in aset.modules} for t in aset.tasks},
                                   base_model=aset.base_model, metadata=aset.metadata, fan_in_fan_out=aset.fan_in_fan_out)


def _with_magnitudes(factors: Mapping[str, Mapping[str, tuple]], magnitudes, like, metadata=None,
                     fan_in_fan_out: bool | None = None):
    """A DoRA :class:`~hydralib.adapters.AdapterSet` of ``{task: {module: (A, B, s)}}`` and ``{task: {module: m}}``
    (module shapes from ``like``; ``fan_in_fan_out`` overrides its flag: GPT-2 style Conv1D layers)."""
    from dataclasses import replace as _replace

    from ..adapters import AdapterSet

    info = {m: like.module_info(m) for m in like.modules}
    if fan_in_fan_out is not None:
        info = {m: _replace(i, fan_in_fan_out=fan_in_fan_out) for m, i in info.items()}
    return AdapterSet("lora", list(factors), info, lora=factors, base_model=like.base_model,
                      metadata=metadata or {t: like.metadata.get(t, {}) for t in factors},
                      magnitudes=magnitudes, adapter_type="dora")


def _weight(W0, A, B, s, m) -> torch.Tensor:
    V = W0 + float(s) * (B.float() @ A.float())
    return (m.float() / row_norms(V))[:, None] * V


def fit_magnitudes(W_target: torch.Tensor, W0: torch.Tensor, direction: torch.Tensor,
                   kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three magnitudes ``(d_out,)`` for a new direction update ``direction`` ``(d_out, d_in)`` (dense dW).

    ``W_target`` ``(d_out, d_in)``: the task's original DoRA weight; ``kept``: its trained magnitude.
    """
    V = W0 + direction
    unit = V / row_norms(V)[:, None]
    return {"kept": kept.float(), "refit": row_norms(W_target), "lstsq": (W_target * unit).sum(dim=1)}


@dataclass
class MergedDoRA:
    """One merged DoRA adapter: a merged direction (``merged``, LoRA factors, scaling 1) and one magnitude
    ``(d_out,)`` per module (the mean over tasks). ``loss``: relative reconstruction loss of the W_i."""

    merged: MergedLoRA
    magnitudes: dict[str, torch.Tensor]
    loss: float
    energy: float
    fan_in_fan_out: bool = False

    @property
    def method(self) -> str:
        return self.merged.method

    @property
    def storage(self) -> int:
        """Numbers stored: the merged factors and one magnitude vector per module."""
        return self.merged.storage + int(sum(m.numel() for m in self.magnitudes.values()))

    def to_adapter_set(self, name: str | None = None):
        """A one-task DoRA :class:`~hydralib.adapters.AdapterSet` (task ``name``, default the method name)."""
        base = self.merged.to_adapter_set(name)
        task = base.tasks[0]
        factors = {task: {m: base.factors(task, m) for m in base.modules}}
        return _with_magnitudes(factors, {task: dict(self.magnitudes)}, base, metadata=base.metadata,
                                fan_in_fan_out=self.fan_in_fan_out)

    def save_peft(self, directory: str | Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write a DoRA directory (``use_dora=true``) that stock peft loads."""
        aset = self.to_adapter_set()
        return aset.save_peft(aset.tasks[0], directory, overwrite=overwrite, dtype=dtype)


def reconstruction_loss(aset, W0: Mapping[str, torch.Tensor], approx) -> tuple[float, float]:
    """``(sum ||W'_i - W_i||^2, sum ||W_i - W0||^2)`` over tasks and modules (dense weights).

    ``approx(task, module) -> (A (r', d_in), B (d_out, r'), s, m (d_out,))`` gives the approximation's factors.
    """
    loss = energy = 0.0
    for module in aset.modules:
        for task in aset.tasks:
            W = _weight(W0[module], *aset.factors(task, module), aset.magnitudes[task][module])
            loss += float((_weight(W0[module], *approx(task, module)) - W).double().square().sum())
            energy += float((W - W0[module]).double().square().sum())
    return loss, energy


def merge_dora(aset, method: str = "task_arithmetic", *, base_model=None, **options) -> MergedDoRA:
    """Merge DoRA adapters with a dW baseline: ``method`` on the direction updates, magnitudes averaged.

    ``aset``: a DoRA :class:`~hydralib.adapters.AdapterSet`; ``base_model``: required (for the loss);
    ``options``: passed to :func:`~.baselines.merge_adapters` (``lam``, ``density``, ``rank``, ``seed``...).
    The magnitude of each module is the plain mean of the tasks' m_i ``(d_out,)``.
    """
    check_dora_set(aset, base_model, "merge_dora")
    W0 = dora_base_weights(aset, base_model)
    merged = merge_adapters(directions(aset), method, **options)
    magnitudes = {m: torch.stack([aset.magnitudes[t][m].float() for t in aset.tasks]).mean(dim=0)
                  for m in aset.modules}
    loss, energy = reconstruction_loss(aset, W0, lambda t, m: (*merged.factors(m), magnitudes[m]))
    return MergedDoRA(merged, magnitudes, loss / energy if energy > 0 else 0.0, energy, aset.fan_in_fan_out)


@dataclass
class DoraHydraResult:
    """HydraOpt on DoRA direction updates (``hydra``) plus one magnitude ``(d_out,)`` per task and module.

    ``magnitude``: the fit in use (one of :data:`MAGNITUDE_FITS`); ``magnitudes[fit][task][module]`` holds all
    three; ``losses[fit]``: the relative reconstruction loss of the W_i under each fit.
    """

    hydra: HydraOptResult
    magnitude: str
    magnitudes: dict[str, dict[str, dict[str, torch.Tensor]]]
    losses: dict[str, float]
    energy: float = 0.0
    options: dict = field(default_factory=dict)
    fan_in_fan_out: bool = False

    @property
    def tasks(self) -> list[str]:
        return self.hydra.tasks

    @property
    def loss(self) -> float:
        return self.losses[self.magnitude]

    @property
    def storage(self) -> int:
        """Numbers stored: HydraOpt's shared factor and heads plus every task's magnitude vectors."""
        chosen = self.magnitudes[self.magnitude]
        return self.hydra.storage + int(sum(m.numel() for mods in chosen.values() for m in mods.values()))

    def factors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """``(lora_a (r', d_in), lora_b (d_out, r'), 1.0, m (d_out,))`` that ``task`` runs at ``module``."""
        return (*self.hydra.factors(task, module), self.magnitudes[self.magnitude][task][module])

    def to_adapter_set(self, tasks: Sequence[str] | None = None):
        """A DoRA :class:`~hydralib.adapters.AdapterSet` of the reconstructed adapters (rank r', scaling 1)."""
        base = self.hydra.to_adapter_set(tasks)
        factors = {t: {m: base.factors(t, m) for m in base.modules} for t in base.tasks}
        chosen = self.magnitudes[self.magnitude]
        return _with_magnitudes(factors, {t: dict(chosen[t]) for t in base.tasks}, base, metadata=base.metadata,
                                fan_in_fan_out=self.fan_in_fan_out)

    def export_peft(self, out_dir: str | Path, tasks: Sequence[str] | None = None, overwrite: bool = False,
                    dtype: torch.dtype | None = None) -> dict[str, Path]:
        """One DoRA directory per task, ``out_dir/<task>``, that stock peft loads; all appear at once."""
        tasks = list(tasks) if tasks is not None else list(self.tasks)
        out_dir = Path(out_dir)
        targets = {t: check_writable(out_dir / t, overwrite) for t in tasks}
        aset = self.to_adapter_set(tasks)
        with atomic_entries(out_dir, tasks, overwrite=overwrite) as tmp:
            for task in tasks:
                aset.save_peft(task, tmp / task, dtype=dtype)
        return targets


def hydraopt_dora(aset, *, base_model=None, magnitude: str = "lstsq", **options) -> DoraHydraResult:
    """HydraOpt on DoRA adapters: shared A' (or B') over the direction updates, a magnitude per task.

    ``aset``: a DoRA :class:`~hydralib.adapters.AdapterSet`; ``base_model``: required (the magnitude fits and
    the loss need W0); ``magnitude``: ``"lstsq"`` (default, the lowest loss), ``"kept"`` or ``"refit"``;
    ``options``: passed to :func:`~.hydraopt.hydraopt` (``heads``, ``rank``, ``side``, ``solver``...).
    Works on the factors for the fit and on dense ``(d_out, d_in)`` weights per module for the magnitudes.
    """
    if magnitude not in MAGNITUDE_FITS:
        raise ValueError(f"magnitude must be one of {MAGNITUDE_FITS}, got {magnitude!r}")
    check_dora_set(aset, base_model, "hydraopt_dora")
    W0 = dora_base_weights(aset, base_model)
    hydra = hydraopt(directions(aset), **options)
    fits: dict[str, dict[str, dict[str, torch.Tensor]]] = {f: {t: {} for t in aset.tasks} for f in MAGNITUDE_FITS}
    for module in aset.modules:
        for task in aset.tasks:
            A, B, s = aset.factors(task, module)
            W = _weight(W0[module], A, B, s, aset.magnitudes[task][module])
            A2, B2, s2 = hydra.factors(task, module)
            found = fit_magnitudes(W, W0[module], s2 * (B2.float() @ A2.float()), aset.magnitudes[task][module])
            for fit, m in found.items():
                fits[fit][task][module] = m
    losses, energy = {}, 0.0
    for fit in MAGNITUDE_FITS:
        loss, energy = reconstruction_loss(aset, W0, lambda t, m: (*hydra.factors(t, m), fits[fit][t][m]))
        losses[fit] = loss / energy if energy > 0 else 0.0
    return DoraHydraResult(hydra, magnitude, fits, losses, energy, dict(options), aset.fan_in_fan_out)
