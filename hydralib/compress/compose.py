"""Compositions and the other families in the same container: HydraOpt and merges, stored with any codec.

A HydraOpt result is itself a set of factors (A' once per module, K heads), so
it can be quantized like an adapter (:func:`from_hydraopt`); a one-adapter merge
is a per_task set of one entry read by every task (:func:`from_merged`). Storing
them in :class:`~.container.CompressedAdapters` puts every family's bytes on one
axis: the size of the file written.
"""

from __future__ import annotations


def from_hydraopt(result, codec: str = "fp16"):
    """A :class:`~hydralib.merge.HydraOptResult` as a shared-layout set, its shared factor and heads under ``codec``.

    A :class:`~hydralib.merge.dora.DoraHydraResult` (HydraOpt on DoRA directions) also stores each task's
    magnitude of the fit in use, in fp16 (:func:`~.container.with_magnitudes`)."""
    from .container import CompressedAdapters, with_magnitudes

    if hasattr(result, "hydra"):
        return with_magnitudes(from_hydraopt(result.hydra, codec), result.magnitudes[result.magnitude])

    factors = {m: {"shared": r.shared.float(), "heads": r.heads.float()} for m, r in result.modules.items()}
    shapes = {}
    for m, r in result.modules.items():
        d_out = r.heads.shape[1] if result.side == "A" else r.shared.shape[0]
        d_in = r.shared.shape[1] if result.side == "A" else r.heads.shape[2]
        shapes[m] = (int(d_out), int(d_in))
    name = f"hydraopt-{result.side}-K{result.n_heads}-r{result.rank}" + ("" if codec == "fp16" else f"+{codec}")
    return CompressedAdapters.build(name, "shared", result.tasks, result.head_names, result.task_to_head, factors,
                                    {"shared": codec, "heads": codec}, shapes, side=result.side,
                                    base_model=result.base_model,
                                    info={"fit_relative_loss": result.total_loss / result.total_energy
                                          if result.total_energy > 0 else float("nan"),
                                          **({"fan_in_fan_out": True} if getattr(result, "fan_in_fan_out", False)
                                             else {})})


def from_merged(merged_set, tasks, name: str, codec: str = "fp16"):
    """A one-adapter set (e.g. ``MergedLoRA.to_adapter_set("merged")``) served to every task of ``tasks``."""
    from .container import CompressedAdapters, stack_per_task

    entry = merged_set.tasks[0]
    factors, shapes = stack_per_task(merged_set, [entry], merged_set.factors)
    return CompressedAdapters.build(name, "per_task", tasks, [entry], {t: entry for t in tasks}, factors,
                                    {"lora_A": codec, "lora_B": codec}, shapes, base_model=merged_set.base_model)
