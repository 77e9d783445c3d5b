"""Scaling curves: time and memory of exact HydraOpt and of the dense baseline against N, hidden size and rank.

One square module (``d x d``, like ``q_proj``) of structured synthetic
adapters (:mod:`.adapters`) is merged at every grid point. Each axis varies
alone around a base point (N = 40, d = 1024, r = 16); each (point, method) runs
in a fresh worker process (``isolate=True``) so that its peak memory is its
own. Slopes are least-squares fits of ``log(seconds)`` (and ``log(method
MiB)``) against ``log(x)`` along each axis.

What to expect: the dense baseline forms N dense ``d x d`` deltas and takes a
full SVD, ``O(N r d^2 + d^3)`` time and ``O(N d^2)`` memory; the exact solver
works with ``R = min(d, N r)`` basis vectors, ``O(d R^2 + R^3)`` time and
``O(N r d + R^2)`` memory, so it grows with N r until R reaches d.

Example
-------
>>> points = grid_points(GRIDS["default"])
>>> len(points), points[0]
(10, {'n_tasks': 5, 'd_model': 1024, 'rank': 16})
>>> slope([1, 2, 4], [1.0, 4.0, 16.0])
2.0
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from .machine import load_average, machine_info, resolve_device, set_threads
from .report import SCHEMA, write_json

__all__ = ["GRIDS", "BASE", "AXES", "SCALING_METHODS", "grid_points", "slope", "run_scaling", "fit_slopes", "axis_series", "slopes_text"]

AXES = ("n_tasks", "d_model", "rank")
BASE = {"n_tasks": 40, "d_model": 1024, "rank": 16}
GRIDS = {
    "default": {"n_tasks": [5, 10, 20, 40, 80], "d_model": [576, 1024, 2048], "rank": [4, 8, 16, 32]},
    "full": {"n_tasks": [5, 10, 20, 40, 80, 120, 200], "d_model": [576, 1024, 2048, 3072, 4096],
             "rank": [4, 8, 16, 32, 64]},
    "tiny": {"n_tasks": [3, 6], "d_model": [64, 128], "rank": [2, 4]},
}
TINY_BASE = {"n_tasks": 6, "d_model": 64, "rank": 4}
SCALING_METHODS = ["hydraopt-exact", "ta-dense"]


def grid_points(grid: dict, base: dict | None = None) -> list[dict]:
    """Every point of the one-axis-at-a-time grid around ``base`` (default :data:`BASE`), without duplicates."""
    base = dict(base or BASE)
    points: list[dict] = []
    for axis in AXES:
        for value in grid[axis]:
            point = dict(base, **{axis: int(value)})
            if point not in points:
                points.append(point)
    return points


def slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of ``log y`` against ``log x`` (None with fewer than two positive points)."""
    import numpy as np

    pairs = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len({a for a, _ in pairs}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pairs]), np.log([b for _, b in pairs])
    return float(round(np.polyfit(lx, ly, 1)[0], 6))


def axis_series(result: dict, axis: str, method: str, metric: str = "median_s") -> tuple[list[int], list[float]]:
    """``(x, y)`` along ``axis`` (other axes at the base point) for ``method``; ``metric`` is a record key or a memory key."""
    base = result["base"]
    xs, ys = [], []
    for p in result["points"]:
        if p["method"] != method or p.get("status") != "ok":
            continue
        if any(p[a] != base[a] for a in AXES if a != axis):
            continue
        value = p.get(metric, p.get("memory", {}).get(metric))
        if value is not None:
            xs.append(p[axis])
            ys.append(value)
    order = sorted(range(len(xs)), key=xs.__getitem__)
    return [xs[i] for i in order], [ys[i] for i in order]


def fit_slopes(result: dict) -> dict:
    """``{method: {axis: {"time": slope, "memory": slope}}}`` (memory: the method's own MiB, points above 1 MiB)."""
    out: dict = {}
    for method in result["settings"]["methods"]:
        out[method] = {}
        for axis in AXES:
            x, t = axis_series(result, axis, method, "median_s")
            xm, m = axis_series(result, axis, method, result["settings"]["memory_metric"])
            keep = [(a, b) for a, b in zip(xm, m) if b > 1.0]
            out[method][axis] = {"time": slope(x, t), "memory": slope([a for a, _ in keep], [b for _, b in keep])}
    return out


def run_scaling(
    grid: str | dict = "default",
    methods: Sequence[str] = SCALING_METHODS,
    *,
    base: dict | None = None,
    repeats: int = 3,
    budget_s: float = 60.0,
    device: str | None = "cpu",
    threads: int | None = None,
    isolate: bool | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Measure ``methods`` at every grid point; return (and write) points and fitted slopes.

    ``grid``: ``"default"`` (a few minutes on 2 CPU cores), ``"full"`` (N to
    200, d to 4096, r to 64), ``"tiny"`` (tests), or a dict like
    :data:`GRIDS` entries. Other arguments as :func:`~.runner.run_benchmark`.
    """
    from tqdm.auto import tqdm

    from ..atomic import check_writable
    from .methods import METHODS, check_methods
    from .runner import run_worker_process

    grid_name = grid if isinstance(grid, str) else "custom"
    if isinstance(grid, str):
        if grid not in GRIDS:
            from ..errors import HydraError

            raise HydraError(f"unknown scaling grid {grid!r}; choose from {sorted(GRIDS)}")
        if base is None and grid == "tiny":
            base = TINY_BASE
        grid = GRIDS[grid]
    base = dict(base or BASE)
    methods = check_methods(methods)
    bad = [m for m in methods if METHODS[m].needs == "peft"]
    if bad:
        from ..errors import HydraError

        raise HydraError(f"scaling curves run our methods only, not {bad}")
    device = resolve_device(device)
    threads = threads or (1 if device == "cpu" else max(1, min(8, os.cpu_count() or 1)))
    isolate = (device == "cpu") if isolate is None else isolate
    if out is not None:
        check_writable(out, overwrite)
    echo = echo or (lambda text: tqdm.write(text, file=sys.stderr))
    set_threads(threads)
    cuda = device.startswith("cuda")
    result = {
        "schema": SCHEMA, "kind": "scaling", "complete": False, "command": command, "grid_name": grid_name,
        "grid": {a: list(grid[a]) for a in AXES}, "base": base,
        "module": "one d x d module (like q_proj) of structured synthetic adapters",
        "settings": {"methods": methods, "repeats": repeats, "budget_s": budget_s, "device": device,
                     "threads": threads, "isolate": isolate, "seed": seed, "rank_out": "r (the adapters' rank)",
                     "memory_metric": "cuda_method_mib" if cuda else "method_mib"},
        "machine": machine_info(device, threads),
        "points": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="hydralib-scaling-"))
    jobs = [(p, m) for p in grid_points(grid, base) for m in methods]
    written = [False]
    try:
        for point, method in tqdm(jobs, desc="scaling", disable=not progress, leave=False):
            spec = {"adapters": {"generate": {"n_tasks": point["n_tasks"], "d_out": point["d_model"],
                                              "d_in": point["d_model"], "rank": point["rank"], "seed": seed}},
                    "methods": [method], "repeats": repeats, "budget_s": budget_s, "device": device,
                    "threads": threads, "rank": point["rank"], "seed": seed}
            if isolate:
                got = run_worker_process(spec, threads, workdir)
            else:
                from .worker import run_methods

                got = run_methods(spec)
            record = got["records"][method] if "records" in got else {"status": "error", "error": got.get("error")}
            slim = {**point, "method": method, "status": record["status"], "median_s": record.get("median_s"),
                    "seconds": record.get("seconds", []), "repeats_done": record.get("repeats_done", 0),
                    "memory": record.get("memory", {}), "setup_s": record.get("setup_s"),
                    "loss_rel": record.get("quality", {}).get("loss_rel"), "error": record.get("error")}
            result["points"].append(slim)
            if record["status"] == "ok":
                mem = slim["memory"].get(result["settings"]["memory_metric"])
                echo(f"N={point['n_tasks']:<4} d={point['d_model']:<5} r={point['rank']:<3} {method:<16} "
                     f"{slim['median_s']:.3f} s  method {mem:.0f} MiB")
            else:
                echo(f"N={point['n_tasks']} d={point['d_model']} r={point['rank']} {method}: error {slim['error']}")
            if out is not None:
                write_json(result, out, overwrite=overwrite or written[0])
                written[0] = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"]["load_after"] = load_average()
    result["machine"]["time_end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["slopes"] = fit_slopes(result)
    result["complete"] = True
    if out is not None:
        write_json(result, out, overwrite=overwrite or written[0])
    return result


def slopes_text(result: dict) -> str:
    """The fitted slopes as a plain table."""
    from ..tables import text_table

    rows = []
    for method, axes in result["slopes"].items():
        for axis, s in axes.items():
            rows.append([method, axis, "-" if s["time"] is None else f"{s['time']:.2f}",
                         "-" if s["memory"] is None else f"{s['memory']:.2f}"])
    return text_table(rows, ["method", "against", "time slope", "memory slope"])

