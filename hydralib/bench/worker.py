"""Run benchmark methods in this process: set up the inputs, time the repeats, measure memory, evaluate.

The runner calls :func:`run_methods` directly (``--no-isolate``, and always on
CUDA) or starts ``python -m hydralib.bench.worker SPEC RESULT`` once per method
(CPU default), so that each method's peak memory is measured in a fresh
process that holds only its own inputs.

A spec is a JSON-ready dict:

* ``adapters``: ``{"dirs": [...], "tasks": [...]}`` (PEFT directories, the
  paper-scale run) or ``{"generate": {"n_tasks", "d_out", "d_in", "rank",
  "seed"}}`` (one module, generated in the process; the scaling grid);
* ``shapes``: ``{"n_layers", "d_model", "d_kv"}`` (peft's model; dirs only);
* ``methods``, ``repeats``, ``budget_s``, ``device``, ``threads``, ``rank``,
  ``density``, ``seed``, ``target_ratio``, ``adam_max_steps``.

Timing: ``time.perf_counter`` around each repeat (after a CUDA synchronise),
repeated until ``repeats`` are done or their total passes ``budget_s`` (at least
one); the median is reported. Memory: of the first repeat, with the inputs
already resident (:class:`~hydralib.bench.machine.MemoryProbe`). The output of
the first repeat is then evaluated (not timed) and freed.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
import traceback

__all__ = ["setup_context", "measure", "run_methods", "main"]


def setup_context(spec: dict):
    """Load or generate the adapters (and peft's model when a peft method is asked for); returns a BenchContext."""
    from .methods import METHODS, BenchContext

    device = spec.get("device", "cpu")
    adapters = spec["adapters"]
    start = time.perf_counter()
    if "dirs" in adapters:
        from ..adapters import load_adapters

        aset = load_adapters(adapters["dirs"], tasks=adapters.get("tasks"))
    else:
        from ..adapters import AdapterSet
        from ..synthetic import structured_factors
        from .presets import BenchPreset

        g = adapters["generate"]
        shape = BenchPreset("scaling", 1, int(g["d_in"]), int(g["d_out"]), int(g["rank"]), int(g["n_tasks"]))
        factors, metadata = structured_factors(shape, int(g.get("seed", 0)),
                                               modules={"model.layers.0.self_attn.q_proj": (int(g["d_out"]), int(g["d_in"]))})
        aset = AdapterSet.from_factors(factors, metadata=metadata)
        del factors
    if device != "cpu":
        aset = aset.to(device)
    ctx = BenchContext(aset=aset, rank=int(spec["rank"]), device=device, density=float(spec.get("density", 0.5)),
                       seed=int(spec.get("seed", 0)), target_ratio=float(spec.get("target_ratio", 0.01)),
                       adam_max_steps=int(spec.get("adam_max_steps", 3000)))
    if any(METHODS[m].needs == "peft" for m in spec["methods"]):
        if "dirs" not in adapters:
            raise ValueError("peft's methods need the adapters as PEFT directories")
        from .peft_model import load_peft_model

        peft_start = time.perf_counter()
        shapes = spec["shapes"]
        ctx.peft_model = load_peft_model(adapters["dirs"], list(aset.tasks), shapes["n_layers"], shapes["d_model"],
                                         shapes["d_kv"], device=device)
        ctx.cache["peft_setup_s"] = time.perf_counter() - peft_start
    ctx.cache["setup_s"] = time.perf_counter() - start
    return ctx


def measure(name: str, ctx, repeats: int = 3, budget_s: float = 120.0) -> dict:
    """Time ``repeats`` runs of method ``name`` (fewer if over ``budget_s``), peak memory of the first, evaluate it."""
    from .machine import MemoryProbe, synchronize
    from .methods import METHODS

    method = METHODS[name]
    record = {"method": name, "family": method.family, "space": method.space, "output": method.output,
              "description": method.description, "status": "ok"}
    seconds, wall = [], []
    try:
        for i in range(max(1, int(repeats))):
            probe = MemoryProbe(ctx.device) if i == 0 else None
            if probe:
                probe.start()
            synchronize(ctx.device)
            t0 = time.perf_counter()
            output = method.run(ctx)
            synchronize(ctx.device)
            dt = time.perf_counter() - t0
            wall.append(dt)
            timed = method.timed(output)
            seconds.append(float(timed) if timed is not None else dt)
            if probe:
                record["memory"] = probe.stop()
                record["quality"] = method.evaluate(ctx, output)
            method.cleanup(ctx, output)
            del output
            gc.collect()
            if sum(wall) >= budget_s:
                break
    except Exception as exc:  # one failing method must not lose the others
        record["status"] = "error"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=6)
    record["seconds"] = [round(s, 4) for s in seconds]
    record["wall_seconds"] = [round(s, 4) for s in wall]
    record["repeats_done"] = len(seconds)
    record["median_s"] = statistics.median(seconds) if seconds else None
    return record


def run_methods(spec: dict, ctx=None) -> dict:
    """Set up (unless ``ctx`` is given) and measure every method of ``spec``; returns ``{"records", "setup"}``."""
    from .machine import load_average, set_threads

    if spec.get("threads", 1) != "default":  # "default": the libraries' own thread settings, untouched
        set_threads(int(spec.get("threads", 1)))
    if ctx is None:
        ctx = setup_context(spec)
    records = {}
    for name in spec["methods"]:
        records[name] = measure(name, ctx, int(spec.get("repeats", 3)), float(spec.get("budget_s", 120.0)))
        records[name]["setup_s"] = round(ctx.cache.get("setup_s", 0.0), 3)
        if "peft_setup_s" in ctx.cache:
            records[name]["peft_setup_s"] = round(ctx.cache["peft_setup_s"], 3)
        records[name]["load_after"] = load_average()
    return {"records": records}


def main(argv: list[str] | None = None) -> int:
    """``python -m hydralib.bench.worker SPEC.json RESULT.json``: run the spec, write the result."""
    argv = sys.argv[1:] if argv is None else argv
    spec_path, result_path = argv
    with open(spec_path) as fh:
        spec = json.load(fh)
    try:
        result = run_methods(spec)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
