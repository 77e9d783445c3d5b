"""VeRA beside DoRA and AdaLoRA: the zoo's VeRA adapters of the same tasks, measured the same way.

The VeRA zoo (trained with the LoRA zoo, ``<zoo>/adapters/vera/``) covers every
task; the adapter-type measurement takes the tasks of the DoRA and AdaLoRA groups
and scores, on the same test examples, a few points of the VeRA frontier
(:func:`~hydralib.suite.vera_frontier.default_vera_methods`, built by
:func:`~hydralib.suite.vera_frontier.build_vera_method`): the individual adapters,
VeRA HydraOpt sharing ``lambda_d`` (the input side, the analogue of sharing A)
with one head per task, per application and one head, sharing ``lambda_b`` with
one head per task, and task arithmetic on the vectors (with the scale the VeRA
frontier tuned on validation, when it is stored); and each adapter's vectors in
int8 and int4 (:func:`~hydralib.compress.quantize_vera`).

Bytes are those of the numbers stored in fp16 (int8 / int4: the codes and scales
the codec writes), relative to the VeRA adapters' own numbers in fp16 (a VeRA file
is mostly its vectors; its safetensors header is left out, on both sides).
Relative loss is on dW, over the tasks and modules.
"""

from __future__ import annotations

import torch

#: (point name, VeRA frontier method name): the points measured for VeRA.
POINTS = (("individual", "individual"), ("int8", "int8"), ("int4", "int4"), ("hydraopt-task-d", "vera-hydraopt-d-task"),
          ("hydraopt-application-d", "vera-hydraopt-d-application"), ("hydraopt-1-d", "vera-hydraopt-d-1"),
          ("task_arithmetic", "task_arithmetic"), ("hydraopt-task-b", "vera-hydraopt-b-task"))
#: The side comparison: (shares lambda_d, shares lambda_b), one head per task.
SIDE_PAIR = ("hydraopt-task-d", "hydraopt-task-b")


def vera_type_adapters(preset, tasks):
    """The zoo's VeRA adapters of ``tasks`` as an AdapterSet (module shapes from the zoo's LoRAs of the same tasks,
    so the projections are regenerated without loading the base model)."""
    from ..storage import module_shapes
    from .artifacts import load_zoo

    return load_zoo(preset, "vera", tasks=tasks, module_shapes=module_shapes(load_zoo(preset, "lora", tasks=tasks)))


def tuned_values(preset, method: str) -> dict:
    """The scale (and density) the stored VeRA frontier tuned for ``method``; ``{"lam": 1.0}`` without one."""
    from .vera_frontier import vera_frontier_results

    stored = vera_frontier_results(preset, stored_only=True)
    for row in (stored or {}).get("rows", []):
        if row["name"] == method:
            return dict(row.get("tuned") or {})
    return {"lam": 1.0}


def vera_points(preset) -> list[tuple[str, dict]]:
    """``(name, params)`` of every VeRA point (``individual`` first); params name the VeRA frontier method."""
    out = []
    for name, method in POINTS:
        params = ({"family": "vera_quantize", "codec": method} if method.startswith("int")
                  else {"family": "vera", "method": method})
        if method == "task_arithmetic":
            params["values"] = tuned_values(preset, method)
        out.append((name, params))
    return out


def delta_loss(aset, scored, mapping: dict[str, str]) -> float:
    """Relative loss on dW: ``sum_{t,m} ||dW'_{mapping[t]} - dW_t||^2 / sum ||dW_t||^2`` (dense per module)."""
    loss = energy = 0.0
    for module in aset.modules:
        for task in aset.tasks:
            target = aset.delta(task, module).double()
            loss += float((scored.delta(mapping[task], module).double() - target).pow(2).sum())
            energy += float(target.pow(2).sum())
    return loss / energy if energy > 0 else 0.0


def build_vera_point(preset, params: dict, aset) -> tuple[object, dict, int, int, float, dict]:
    """``(set to score, task -> its adapter in that set, bytes stored, the adapters' own bytes (fp16), relative loss
    on dW, extra)`` of one VeRA point (``params`` from :func:`vera_points`)."""
    from ..compress import quantize_vera
    from ..storage import set_params
    from .vera_frontier import BYTES_PER_NUMBER, build_vera_method, default_vera_methods

    own = BYTES_PER_NUMBER * set_params(aset)
    if params["family"] == "vera_quantize":
        built, nbytes = quantize_vera(aset, params["codec"])
        mapping = {t: t for t in aset.tasks}
        return built, mapping, nbytes, own, delta_loss(aset, built, mapping), {}
    spec = next(s for s in default_vera_methods(preset) if s.name == params["method"])
    built, mapping, stored, info = build_vera_method(spec, aset, params.get("values", {}))
    rel = (0.0 if spec.family == "individual" else info["relative_loss"] if "relative_loss" in info
           else delta_loss(aset, built, mapping))
    extra = {"heads_k": info["heads"]} if "heads" in info else {}
    return built, mapping, BYTES_PER_NUMBER * stored, own, rel, extra


def vera_structure(aset) -> dict:
    """Mean cosine similarity between tasks, per module then averaged, of ``lambda_d``, of its movement from peft's
    shared start ``d_initial`` (``lambda_d - d0``) and of ``lambda_b`` (which starts at 0)."""
    d0 = float(aset.configs.get(aset.tasks[0], {}).get("d_initial", 0.1))  # peft's default when not recorded
    n = len(aset.tasks)
    iu = torch.triu_indices(n, n, 1)
    sums = {"cos_d": 0.0, "cos_d_moved": 0.0, "cos_b": 0.0}
    for module in aset.modules:
        LB = torch.stack([aset.vera_vectors(t, module)[0] for t in aset.tasks]).double()
        LD = torch.stack([aset.vera_vectors(t, module)[1] for t in aset.tasks]).double()
        for key, V in (("cos_d", LD), ("cos_d_moved", LD - d0), ("cos_b", LB)):
            unit = V / V.norm(dim=1, keepdim=True).clamp_min(1e-30)
            sums[key] += float((unit @ unit.T)[iu[0], iu[1]].mean()) / len(aset.modules)
    return {**sums, "d_initial": d0}
