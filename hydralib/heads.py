"""Run a HydraOpt result inside a model: one shared factor per module, a switchable head.

:func:`attach_heads` replaces every module a :class:`~hydralib.merge.hydraopt.HydraOptResult`
adapts (``nn.Linear``, or GPT-2's ``Conv1D``) by a small wrapper, :class:`HeadLayer`,
that adds the low-rank update of the *active* head on the factors:

* side ``"A"``: ``y = base(x) + s * (x @ A'^T) @ B'_k^T`` with the shared
  ``A'`` ``(r', d_in)`` and the heads ``B'`` ``(K, d_out, r')``;
* side ``"B"``: ``y = base(x) + s * (x @ A'_k^T) @ B'^T`` with the shared
  ``B'`` ``(d_out, r')`` and the heads ``A'`` ``(K, r', d_in)``;

for ``x`` ``(..., d_in)`` and ``y`` ``(..., d_out)``; ``s = 1`` (HydraOpt results
carry the scaling in their factors). No ``d_out x d_in`` update is ever formed
and no factor is copied per task or per head: each wrapper holds the result's
shared tensor once (a buffer, by reference when device and dtype already match)
and the heads stacked ``(K, ...)``; the active head is one index in a state
object that all wrappers share, so switching tasks is O(1) and touches no
tensor. :class:`HeadRuntime` switches heads (``set_task``, ``set_head``,
``use``), reports the numbers it holds (``storage_bytes``), and ``detach``
puts the original modules back (the same objects, so the model is bit for bit
what it was).

The outputs equal those of stock ``peft`` loading the directory that
:func:`~hydralib.merge.hydraopt.export_peft` writes for the task, and those of
:func:`hydralib.runtime.applied` with ``result.to_adapter_set()`` (which adds a
dense ``dW`` instead), up to float rounding.

Example
-------
>>> import torch
>>> from hydralib.merge.hydraopt import hydraopt
>>> from hydralib.synthetic import random_lora_factors
>>> model = torch.nn.Sequential(torch.nn.Linear(10, 12), torch.nn.Tanh(), torch.nn.Linear(12, 6))
>>> factors = random_lora_factors(3, {"0": (12, 10), "2": (6, 12)}, rank=2, seed=0, task_names=["a", "b", "c"])
>>> result = hydraopt(factors, heads=2, rank=2, side="A", progress=False)
>>> x = torch.randn(4, 10)
>>> base = model(x)
>>> runtime = attach_heads(model, result)
>>> runtime.active is None and torch.equal(model(x), base)     # no head selected: the base model
True
>>> with runtime.use("b"):
...     out_b = model(x)
>>> runtime.set_task("a").active == result.head_index("a")
True
>>> runtime.storage_params() == result.storage, runtime.storage_bytes() == 4 * result.storage
(True, True)
>>> runtime.detach()
>>> torch.equal(model(x), base) and isinstance(model[0], torch.nn.Linear)
True
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import torch

from .errors import AdapterError

if TYPE_CHECKING:
    from .merge.hydraopt import HydraOptResult

__all__ = ["attach_heads", "HeadRuntime", "HeadLayer", "HeadState"]


class HeadState:
    """The active head, shared by every :class:`HeadLayer` of one runtime (by reference).

    ``index`` is ``None`` (no update: the base model) or ``0..n_heads-1``;
    ``task`` is the task that selected it (``None`` when set by head).
    """

    __slots__ = ("index", "task", "n_heads")

    def __init__(self, n_heads: int):
        self.n_heads = int(n_heads)
        self.index: int | None = None
        self.task: str | None = None


class HeadLayer(torch.nn.Module):
    """A linear layer plus the active head's low-rank update, computed on the factors.

    ``base_layer``: the original ``nn.Linear`` (weight ``(d_out, d_in)``) or
    GPT-2 ``Conv1D`` (weight ``(d_in, d_out)``), kept as it is.
    ``shared`` (buffer): side A ``A'`` ``(r', d_in)``; side B ``B'`` ``(d_out, r')``.
    ``heads`` (buffer): side A ``B'_k`` stacked ``(K, d_out, r')``; side B
    ``A'_k`` stacked ``(K, r', d_in)``. Both are registered once, non-persistent
    (they stay out of ``state_dict``). ``state``: the runtime's :class:`HeadState`.

    ``forward(x)``, ``x`` ``(..., d_in)`` -> ``(..., d_out)``: ``base_layer(x)``,
    plus ``scaling * (x @ A^T) @ B^T`` of head ``state.index`` unless it is
    ``None``. The update is computed in the factors' dtype and added in the
    base output's dtype.
    """

    def __init__(
        self,
        base_layer: torch.nn.Module,
        shared: torch.Tensor,
        heads: torch.Tensor,
        side: str,
        state: HeadState,
        name: str = "",
        scaling: float = 1.0,
    ):
        super().__init__()
        if side not in ("A", "B"):
            raise ValueError(f"side must be 'A' or 'B', got {side!r}")
        self.base_layer = base_layer
        self.register_buffer("shared", shared, persistent=False)
        self.register_buffer("heads", heads, persistent=False)
        self.side = side
        self.state = state
        self.name = name
        self.scaling = float(scaling)

    # GPT-2 / Llama code sometimes reads these off the layer (e.g. ``layer.weight.dtype``)
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    @property
    def rank(self) -> int:
        return int(self.shared.shape[0] if self.side == "A" else self.shared.shape[1])

    def factors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lora_a (r', d_in), lora_b (d_out, r'))`` of head ``k``: views, no copy."""
        if self.side == "A":
            return self.shared, self.heads[k]
        return self.heads[k], self.shared

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        k = self.state.index
        if k is None:
            return out
        lora_a, lora_b = self.factors(k)
        h = x.to(lora_a.dtype)
        update = torch.nn.functional.linear(torch.nn.functional.linear(h, lora_a), lora_b)  # (x A^T) B^T
        if self.scaling != 1.0:
            update = update * self.scaling
        return out + update.to(out.dtype)

    def extra_repr(self) -> str:
        return f"side={self.side}, rank={self.rank}, heads={int(self.heads.shape[0])}, name={self.name!r}"


def _layer_shape(layer: torch.nn.Module) -> tuple[int, int] | None:
    """``(d_out, d_in)`` of an ``nn.Linear`` or GPT-2 ``Conv1D``; ``None`` for anything else."""
    weight = getattr(layer, "weight", None)
    if isinstance(layer, HeadLayer) or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        return None
    if isinstance(layer, torch.nn.Linear):
        return int(weight.shape[0]), int(weight.shape[1])
    if type(layer).__name__ == "Conv1D":  # GPT-2 stores (d_in, d_out)
        return int(weight.shape[1]), int(weight.shape[0])
    return None


def _result_shapes(module: str, m, side: str, n_heads: int) -> tuple[int, int, int]:
    """``(d_out, d_in, r')`` of a module result, checking its two tensors agree."""
    shared, heads = m.shared, m.heads
    if shared.ndim != 2 or heads.ndim != 3:
        raise AdapterError(f"module {module}: shared {tuple(shared.shape)} / heads {tuple(heads.shape)} "
                           "are not 2-D / 3-D")
    if side == "A":  # A' (r', d_in), B'_k (K, d_out, r')
        rank, d_in = shared.shape
        k, d_out, rank_h = heads.shape
    else:  # B' (d_out, r'), A'_k (K, r', d_in)
        d_out, rank = shared.shape
        k, rank_h, d_in = heads.shape
    if rank_h != rank:
        raise AdapterError(f"module {module}: side {side}: shared {tuple(shared.shape)} and heads "
                           f"{tuple(heads.shape)} disagree on the rank ({rank} vs {rank_h})")
    if k != n_heads:
        raise AdapterError(f"module {module}: {k} heads stored, the result names {n_heads}")
    return int(d_out), int(d_in), int(rank)


def _resolve_mapping(result: "HydraOptResult", mapping: Mapping | None) -> dict[str, int]:
    """``{task: head index}`` from ``mapping`` (task -> head name or index), default the result's own."""
    names = list(result.head_names)
    if mapping is None:
        mapping = result.task_to_head
    if not isinstance(mapping, Mapping):
        raise AdapterError(f"mapping must be a task -> head mapping, got {type(mapping).__name__}")
    if not mapping:
        raise AdapterError("mapping is empty: no task can select a head")
    out = {}
    for task, head in mapping.items():
        if not isinstance(task, str) or not task:
            raise AdapterError(f"mapping: task names must be non-empty strings, got {task!r}")
        if isinstance(head, str):
            if head not in names:
                raise AdapterError(f"mapping: task {task!r} -> head {head!r}, which is not one of the heads {names}")
            out[task] = names.index(head)
        elif isinstance(head, int) and not isinstance(head, bool):
            if not 0 <= head < len(names):
                raise AdapterError(f"mapping: task {task!r} -> head {head}, outside 0..{len(names) - 1}")
            out[task] = int(head)
        else:
            raise AdapterError(f"mapping: task {task!r} -> {head!r}: a head is a name in {names} or an index")
    return out


class HeadRuntime:
    """Handle on the heads attached to a model by :func:`attach_heads`.

    Attributes: ``model``, ``result``, ``side``, ``head_names`` (K),
    ``task_to_head`` (``{task: head index}``), ``layers`` (``{module:
    HeadLayer}``), ``state`` (the shared :class:`HeadState`).

    ``set_task(task)`` / ``set_head(k)`` select the head every layer uses
    (``None``: no update, the base model) and return the runtime; ``use(task)``
    does it for a ``with`` block and restores the previous head after it;
    ``active`` is the active head index (or ``None``), ``active_task`` the task
    that selected it. ``detach()`` puts the original modules back.
    """

    def __init__(self, model, result, layers, originals, state, task_to_head):
        self.model = model
        self.result = result
        self.side = result.side
        self.head_names = list(result.head_names)
        self.task_to_head = dict(task_to_head)
        self.layers: dict[str, HeadLayer] = dict(layers)
        self._originals: dict[str, torch.nn.Module] = dict(originals)
        self.state = state
        self.attached = True

    def __repr__(self) -> str:
        return (f"HeadRuntime(side={self.side!r}, modules={len(self.layers)}, heads={len(self.head_names)}, "
                f"tasks={len(self.task_to_head)}, active={self.active!r}, attached={self.attached})")

    # ---------------------------------------------------------------- switching
    @property
    def tasks(self) -> list[str]:
        return list(self.task_to_head)

    @property
    def active(self) -> int | None:
        """Index of the active head in ``head_names``, or ``None`` (the base model)."""
        return self.state.index

    @property
    def active_task(self) -> str | None:
        """The task that selected the active head (``None`` if set by :meth:`set_head` or none)."""
        return self.state.task

    @property
    def active_head(self) -> str | None:
        """Name of the active head, or ``None``."""
        return None if self.state.index is None else self.head_names[self.state.index]

    def _check_attached(self) -> None:
        if not self.attached:
            raise AdapterError("the heads were detached from the model; attach_heads again to use them")

    def head_of(self, task: str) -> int:
        """Head index of ``task``; AdapterError for a task the mapping does not know."""
        if task not in self.task_to_head:
            known = list(self.task_to_head)
            raise AdapterError(f"unknown task {task!r}; the heads serve {known[:8]}{'...' if len(known) > 8 else ''}")
        return self.task_to_head[task]

    def set_task(self, task: str | None) -> "HeadRuntime":
        """Make every layer use ``task``'s head (``None``: no head, the base model)."""
        self._check_attached()
        if task is None:
            self.state.index, self.state.task = None, None
        else:
            self.state.index, self.state.task = self.head_of(task), task
        return self

    def set_head(self, head: int | str | None) -> "HeadRuntime":
        """Make every layer use head ``head`` (an index, a name in ``head_names``, or ``None``)."""
        self._check_attached()
        if head is None:
            index = None
        elif isinstance(head, str):
            if head not in self.head_names:
                raise AdapterError(f"unknown head {head!r}; heads: {self.head_names}")
            index = self.head_names.index(head)
        elif isinstance(head, int) and not isinstance(head, bool) and 0 <= head < len(self.head_names):
            index = int(head)
        else:
            raise AdapterError(f"head {head!r} is not an index in 0..{len(self.head_names) - 1} or a head name")
        self.state.index, self.state.task = index, None
        return self

    @contextlib.contextmanager
    def use(self, task: str | None) -> Iterator[torch.nn.Module]:
        """``with runtime.use(task): model(...)``; the previous head is active again afterwards."""
        previous = (self.state.index, self.state.task)
        self.set_task(task)
        try:
            yield self.model
        finally:
            self.state.index, self.state.task = previous

    # ---------------------------------------------------------------- views and accounting
    def factors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(lora_a (r', d_in), lora_b (d_out, r'), scaling)`` that ``task`` runs at ``module``: views of the attached tensors."""
        if module not in self.layers:
            raise AdapterError(f"module {module}: no head attached there")
        layer = self.layers[module]
        return (*layer.factors(self.head_of(task)), layer.scaling)

    def _tensors(self) -> dict[tuple, torch.Tensor]:
        out = {}
        for layer in self.layers.values():
            for t in (layer.shared, layer.heads):
                out.setdefault((t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()), t)
        return out

    def storage_params(self) -> int:
        """Numbers held by the attached layers: each shared factor once plus the stacked heads."""
        return int(sum(t.numel() for t in self._tensors().values()))

    def storage_bytes(self) -> int:
        """Bytes held by the attached layers, each tensor counted once (``storage_params`` x element size)."""
        return int(sum(t.numel() * t.element_size() for t in self._tensors().values()))

    # ---------------------------------------------------------------- detaching
    def detach(self) -> None:
        """Put the original modules back (the same objects: weights bit for bit as before). Idempotent."""
        if not self.attached:
            return
        for name, original in self._originals.items():
            _set_submodule(self.model, name, original)
        self.state.index, self.state.task = None, None
        self.attached = False


def _set_submodule(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def attach_heads(
    model: torch.nn.Module,
    result: "HydraOptResult | str | Path",
    mapping: Mapping[str, str | int] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> HeadRuntime:
    """Wrap every module ``result`` adapts with a :class:`HeadLayer`; returns the :class:`HeadRuntime`.

    Parameters
    ----------
    model: a torch / transformers model whose module names are the result's
        (``model.layers.0.self_attn.q_proj``, ``transformer.h.0.attn.c_attn``);
        each must be an ``nn.Linear`` or a GPT-2 ``Conv1D`` of shape
        ``(d_out, d_in)`` matching the result.
    result: a :class:`~hydralib.merge.hydraopt.HydraOptResult`, or a bundle
        directory (loaded with :func:`~hydralib.merge.hydraopt.load_bundle`).
        Per module: side A, ``shared`` A' ``(r', d_in)`` and ``heads`` B'
        ``(K, d_out, r')``; side B, ``shared`` B' ``(d_out, r')`` and ``heads``
        A' ``(K, r', d_in)``.
    mapping: ``{task: head}`` with a head name (``result.head_names``) or an
        index ``0..K-1``; default ``result.task_to_head``. It may name tasks the
        result was not fitted on (e.g. route a new task to an existing head).
    dtype: dtype of the attached factors (default: as stored, float32).

    The factors go to the device of each module's weight; when device and
    dtype already match they are the result's own tensors (no copy at all),
    otherwise one copy per module, never one per head or task. Everything is
    checked before the model is touched; a missing module, a layer that is not
    linear, a shape mismatch, a module that already has heads, or a bad
    ``mapping`` raises :class:`~hydralib.errors.AdapterError` naming it. No head
    is active until :meth:`HeadRuntime.set_task` / ``set_head`` / ``use``.
    """
    from .merge.hydraopt import HydraOptResult

    if not isinstance(result, HydraOptResult):
        if isinstance(result, (str, Path)):
            from .merge.hydraopt import load_bundle

            result = load_bundle(result)
        else:
            raise TypeError(f"result must be a HydraOptResult or a bundle path, got {type(result).__name__}")
    if result.side not in ("A", "B"):
        raise AdapterError(f"result side must be 'A' or 'B', got {result.side!r}")
    if not result.modules:
        raise AdapterError("the result adapts no module")
    task_to_head = _resolve_mapping(result, mapping)
    n_heads = len(result.head_names)

    # check everything first, so an error leaves the model untouched
    plan = []
    for module, m in result.modules.items():
        try:
            layer = model.get_submodule(module)
        except AttributeError:
            raise AdapterError(f"module {module}: not found in the model ({type(model).__name__})") from None
        if isinstance(layer, HeadLayer):
            raise AdapterError(f"module {module}: heads are already attached there; detach them first")
        shape = _layer_shape(layer)
        if shape is None:
            raise AdapterError(f"module {module}: is a {type(layer).__name__}, not an nn.Linear or GPT-2 Conv1D")
        d_out, d_in, _ = _result_shapes(module, m, result.side, n_heads)
        if shape != (d_out, d_in):
            raise AdapterError(f"module {module}: the result's update is {d_out}x{d_in} (d_out x d_in) but the layer "
                               f"is {shape[0]}x{shape[1]}")
        plan.append((module, layer, m))

    state = HeadState(n_heads)
    layers, originals = {}, {}
    for module, layer, m in plan:
        device = layer.weight.device
        shared = m.shared.detach().to(device=device, dtype=dtype or m.shared.dtype)
        heads = m.heads.detach().to(device=device, dtype=dtype or m.heads.dtype)
        wrapper = HeadLayer(layer, shared, heads, result.side, state, name=module, scaling=1.0)
        wrapper.train(layer.training)
        _set_submodule(model, module, wrapper)
        layers[module], originals[module] = wrapper, layer
    return HeadRuntime(model, result, layers, originals, state, task_to_head)
