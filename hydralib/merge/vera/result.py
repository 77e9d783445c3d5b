"""Results of VeRA HydraOpt: per-module shared vector and heads, per-task views, and saving as PEFT VeRA directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .algebra import _ratio, vera_delta
from .sets import _VeraSource, _vera_set

__all__ = ["VeraModuleResult", "VeraHydraResult"]


@dataclass
class VeraModuleResult:
    """VeRA HydraOpt at one module (see :class:`VeraModuleSolution` for ``shared`` / ``heads`` by side).

    ``loss``, ``floor`` (lower bound: the within-group spread) and ``energy`` are
    weighted sums of squares; ``weights`` ``(N,)`` are the w_i used.
    ``history`` / ``steps`` are those of the kept start; ``start_losses`` the
    final loss of every start (``init`` first, then the random restarts);
    ``seconds`` the time of all starts.
    """

    module: str
    side: str
    shared: torch.Tensor
    heads: torch.Tensor
    loss: float
    floor: float
    energy: float
    weights: torch.Tensor
    history: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    start_losses: list[float] = field(default_factory=list)

    @property
    def relative_loss(self) -> float:
        return _ratio(self.loss, self.energy)

    @property
    def storage(self) -> int:
        """Numbers stored: the shared vector once plus the K head vectors (projections come from the key)."""
        return int(self.shared.numel() + self.heads.numel())

    def vectors(self, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lambda_b (d_out,), lambda_d (r,))`` of head index ``head``."""
        if self.side == "d":
            return self.heads[head], self.shared
        return self.shared, self.heads[head]


@dataclass
class VeraHydraResult:
    """VeRA HydraOpt over the modules of a VeRA adapter set.

    ``modules`` maps module -> :class:`VeraModuleResult`; ``task_to_head`` maps
    every task to one of ``head_names``. ``vectors(task, module)`` gives the
    VeRA vectors that task runs; :meth:`save_peft` writes standard PEFT VeRA
    directories (per task or per head) with the source's ``VeraConfig``.
    """

    side: str
    solver: str
    weighting: str
    tasks: list[str]
    head_names: list[str]
    task_to_head: dict[str, str]
    modules: dict[str, VeraModuleResult]
    source: _VeraSource = field(repr=False)
    grouping: str = ""
    metadata: dict[str, dict] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- summaries
    @property
    def base_model(self) -> str | None:
        return self.source.base_model

    @property
    def n_heads(self) -> int:
        return len(self.head_names)

    @property
    def total_loss(self) -> float:
        return float(sum(m.loss for m in self.modules.values()))

    @property
    def total_floor(self) -> float:
        """Sum of the modules' lower bounds (within-group spread of dW); generally not reached."""
        return float(sum(m.floor for m in self.modules.values()))

    @property
    def total_energy(self) -> float:
        return float(sum(m.energy for m in self.modules.values()))

    @property
    def relative_loss(self) -> float:
        """``total_loss / sum_i w_i ||dW_i||^2`` (summed over modules)."""
        return _ratio(self.total_loss, self.total_energy)

    @property
    def relative_floor(self) -> float:
        return _ratio(self.total_floor, self.total_energy)

    @property
    def storage(self) -> int:
        """Numbers stored, counted from the tensors: per module the shared vector once and K head vectors."""
        return int(sum(m.storage for m in self.modules.values()))

    @property
    def storage_per_module(self) -> dict[str, int]:
        return {name: m.storage for name, m in self.modules.items()}

    def relative_storage(self) -> float:
        """Storage divided by that of keeping every task's VeRA vectors (``N (d_out + r)`` per module)."""
        total = 0
        for m in self.modules.values():
            d_out = m.heads.shape[1] if self.side == "d" else m.shared.shape[0]
            r = m.shared.shape[0] if self.side == "d" else m.heads.shape[1]
            total += len(self.tasks) * (d_out + r)
        return self.storage / total

    @property
    def loss_history(self) -> dict[str, list[float]]:
        return {name: m.history for name, m in self.modules.items()}

    def summary(self) -> dict:
        """JSON-ready numbers: loss, relative loss, floor, energy, storage, heads, iterations."""
        return {
            "side": self.side, "solver": self.solver, "weighting": self.weighting, "heads": self.n_heads,
            "grouping": self.grouping, "loss": self.total_loss, "relative_loss": self.relative_loss,
            "floor": self.total_floor, "relative_floor": self.relative_floor, "energy": self.total_energy,
            "storage": self.storage, "relative_storage": self.relative_storage(),
            "steps": {name: m.steps for name, m in self.modules.items()},
        }

    # ---------------------------------------------------------------- per-task views
    def head_index(self, task: str) -> int:
        if task not in self.task_to_head:
            raise KeyError(f"unknown task {task!r}")
        return self.head_names.index(self.task_to_head[task])

    def vectors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lambda_b (d_out,), lambda_d (r,))`` that ``task`` runs at ``module``."""
        return self.modules[module].vectors(self.head_index(task))

    def task_vectors(self, task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (lambda_b, lambda_d)}`` of ``task`` (a full VeRA adapter)."""
        return {m: self.vectors(task, m) for m in self.modules}

    def head_vectors(self, head: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (lambda_b, lambda_d)}`` of head ``head`` (by name)."""
        if head not in self.head_names:
            raise KeyError(f"unknown head {head!r}; heads: {self.head_names}")
        k = self.head_names.index(head)
        return {m: r.vectors(k) for m, r in self.modules.items()}

    def delta(self, task: str, module: str) -> torch.Tensor:
        """Dense reconstructed dW ``(d_out, d_in)`` of ``task`` (forms the full matrix)."""
        lb, ld = self.vectors(task, module)
        info = self.source.module_info[module]
        vA, vB = self.source.projections
        return vera_delta(lb, ld, vA[:, : info.d_in].to(lb.dtype), vB[: info.d_out].to(lb.dtype))

    def to_adapter_set(self, by: str = "task"):
        """A VeRA :class:`~hydralib.adapters.AdapterSet`: one adapter per task (``by="task"``) or per head (``"head"``)."""
        if by == "task":
            vectors = {t: self.task_vectors(t) for t in self.tasks}
            metadata = {t: {**self.metadata.get(t, {}), "head": self.task_to_head[t]} for t in self.tasks}
        elif by == "head":
            vectors = {h: self.head_vectors(h) for h in self.head_names}
            metadata = {h: {"tasks": [t for t in self.tasks if self.task_to_head[t] == h]} for h in self.head_names}
        else:
            raise ValueError(f"by must be 'task' or 'head', got {by!r}")
        return _vera_set(self.source, vectors, metadata)

    def save_peft(self, root: str | Path, by: str = "task", overwrite: bool = False,
                  dtype: torch.dtype | None = None) -> dict[str, Path]:
        """Write ``root/<task>`` (or ``root/<head>``) as standard PEFT VeRA directories; returns ``{name: path}``.

        Each holds the source's ``VeraConfig`` (same ``projection_prng_key`` and
        ``r``; projections stored when the source's ``save_projection`` is true)
        and the vectors; stock ``PeftModel.from_pretrained`` loads them.
        ``dtype`` defaults to the source's stored dtype. Written atomically.
        """
        aset = self.to_adapter_set(by)
        root = Path(root)
        return {name: aset.save_peft(name, root / name, overwrite=overwrite, dtype=dtype) for name in aset.tasks}
