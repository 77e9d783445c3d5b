"""Apply an adapter set's updates to a transformers model's weights, temporarily.

Evaluation of any adapter set (trained, merged, per-task heads) goes through
one mechanism: add the dense update ``dW = s B A`` of the chosen task to each
adapted module's weight, run the model, and restore the original weights
exactly (they are copied, not subtracted, so nothing drifts). A DoRA set (one
with ``magnitudes``) replaces the weight by peft's DoRA weight
``m[:, None] * (W0 + dW) / ||W0 + dW||_row`` instead.

Example
-------
>>> with applied(model, aset, "smart_reply-fr"):      # doctest: +SKIP
...     logits = model(input_ids).logits
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import torch

from .errors import AdapterError

if TYPE_CHECKING:
    from .adapters import AdapterSet


def _weight_of(model: torch.nn.Module, module: str) -> tuple[torch.Tensor, bool]:
    """The weight tensor of ``module`` and whether it is stored (d_in, d_out) (GPT-2 Conv1D)."""
    try:
        layer = model.get_submodule(module)
    except AttributeError:
        raise AdapterError(f"module {module}: not found in the model ({type(model).__name__})") from None
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise AdapterError(f"module {module}: has no 2-D weight to update")
    return weight, type(layer).__name__ == "Conv1D"


@contextlib.contextmanager
def applied(model: torch.nn.Module, aset: "AdapterSet | None", task: str | None) -> Iterator[torch.nn.Module]:
    """Inside the block, ``model``'s weights include ``task``'s update; outside, they are restored.

    ``aset=None`` or ``task=None`` leaves the model as it is (the base model).
    Works on the factors: each module's ``dW = s B A`` (d_out, d_in) is formed
    once, added to the weight (DoRA: combined with the magnitude ``m (d_out,)``), and discarded.
    """
    if aset is None or task is None:
        yield model
        return
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for module in aset.modules:
                weight, transposed = _weight_of(model, module)
                A, B, s = aset.factors(task, module)
                delta = s * (B.to(weight.device, torch.float32) @ A.to(weight.device, torch.float32))
                if transposed:
                    delta = delta.T
                if delta.shape != weight.shape:
                    source = aset.sources.get(task)
                    origin = f"{source}: " if source else f"adapter {task!r}: "
                    raise AdapterError(
                        f"{origin}hydralib.runtime: module {module}: update {tuple(delta.shape)} does not fit "
                        f"the model's weight {tuple(weight.shape)} (an adapter of another base model?)"
                    )
                saved[module] = weight.detach().clone()
                magnitude = getattr(aset, "magnitudes", {}).get(task, {}).get(module)
                if magnitude is None:
                    weight.add_(delta.to(weight.dtype))
                else:  # DoRA: the norm is per output row of the (d_out, d_in) weight
                    from .peft_io.dora import dora_weight

                    W0 = saved[module].to(torch.float32)
                    W = dora_weight(W0.T if transposed else W0, delta.T if transposed else delta,
                                    magnitude.to(weight.device, torch.float32))
                    weight.copy_((W.T if transposed else W).to(weight.dtype))
        yield model
    finally:
        with torch.no_grad():
            for module, original in saved.items():
                _weight_of(model, module)[0].copy_(original)
