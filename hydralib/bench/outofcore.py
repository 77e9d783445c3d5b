"""The out-of-core benchmark: merges and compressions read from PEFT directories on disk, each in a fresh process.

:func:`ensure_adapters` writes a preset's synthetic adapters
(:func:`~hydralib.synthetic.structured_factors`, generated one module at a time)
as PEFT directories once, outside git: under ``$HYDRALIB_CACHE`` or
``~/.cache/hydralib/bench``, with a ``spec.json`` that names what is there (a
directory with another spec, or half written, is written again).
:func:`run_out_of_core` then starts ``python -m hydralib.bench.outofcore SPEC
RESULT`` once per method; the child loads the adapters (lazily, or eagerly for
the comparison), runs the method, writes its output to a scratch directory and
reports ``seconds`` (load + method + write, ``time.perf_counter``) and
``peak_rss_mib`` (the process's ``VmHWM``: interpreter, torch and all).

Methods (:data:`OOC_METHODS`): ``hydraopt-task`` (exact HydraOpt, K = N, r' = r,
streamed bundle), ``hydraopt-1`` (K = 1), ``ties`` (TIES in dW space,
:func:`~hydralib.merge.streamed.ties_streamed`, optionally on a subset of layers:
the record names the layers run and extrapolates linearly in modules, marked as
such), ``int4`` (:func:`~hydralib.compress.stream.quantize_to_file`), and
``peft-svd``, which is not run when peft's path cannot fit: the record says why
in one line (the base model's fp32 weights against the memory available).
``eager`` runs the same HydraOpt merge on an eager set (``load_adapters``,
``save_bundle``) for the lazy/eager comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

__all__ = ["OOC_METHODS", "cache_dir", "ensure_adapters", "llama_base_params", "run_method", "run_out_of_core",
           "out_of_core_suite", "lazy_eager_ratios", "text_table", "table_rows", "memory_series", "OOC_LABELS"]

OOC_METHODS = ("hydraopt-task", "hydraopt-1", "ties", "int4", "peft-svd")
LLAMA3_VOCAB = 128256


def cache_dir() -> Path:
    """Where generated benchmark adapters live: ``$HYDRALIB_CACHE`` or ``~/.cache/hydralib/bench``."""
    return Path(os.environ.get("HYDRALIB_CACHE") or Path.home() / ".cache" / "hydralib" / "bench")


def ensure_adapters(preset, seed: int = 0, dtype: str = "bfloat16", root: str | Path | None = None) -> list[Path]:
    """The preset's N synthetic adapters as PEFT directories (written once; later calls reuse them).

    Generated module by module and written with one streamed writer per task, so
    memory holds one module of N tasks. ``dtype``: the stored dtype.
    """
    import torch

    from ..atomic import atomic_dir
    from ..peft_io import PREFIX, lora_config_for
    from ..peft_io.config import CONFIG_NAME, WEIGHTS_NAME
    from ..peft_io.stream import SafetensorsWriter
    from ..peft_io.write import _json_ready
    from ..synthetic import STRUCTURE, structured_factors, task_names

    spec = {"preset": preset.as_dict(), "seed": int(seed), "dtype": dtype, "generator": "structured_factors"}
    base = Path(root) if root is not None else cache_dir()
    where = base / f"{preset.name}-n{preset.n_tasks}-r{preset.rank}-s{seed}-{dtype}"
    tasks, _ = task_names(preset.n_tasks, STRUCTURE["n_groups"])  # the names structured_factors gives
    dirs = [where / t for t in tasks]
    spec_file = where / "spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == spec and all((d / WEIGHTS_NAME).is_file() for d in dirs):
        return dirs
    stored = getattr(torch, dtype)
    modules = preset.modules()
    where.mkdir(parents=True, exist_ok=True)
    spec_file.unlink(missing_ok=True)
    empty = {m: (torch.empty(preset.rank, d_in, device="meta"), torch.empty(d_out, preset.rank, device="meta"), 2.0)
             for m, (d_out, d_in) in modules.items()}
    config = _json_ready(lora_config_for(empty, f"synthetic-{preset.name}"))
    specs = {}
    for m, (d_out, d_in) in modules.items():
        specs[f"{PREFIX}{m}.lora_A.weight"] = (stored, (preset.rank, d_in))
        specs[f"{PREFIX}{m}.lora_B.weight"] = (stored, (d_out, preset.rank))
    with tempfile.TemporaryDirectory(dir=where, prefix=".writing-") as tmp:
        writers = [SafetensorsWriter(Path(tmp) / f"{t}.safetensors", specs, {"format": "pt"}) for t in tasks]
        for m, shape in modules.items():
            factors, _ = structured_factors(preset, seed, modules={m: shape})
            for t, w in zip(tasks, writers):
                A, B, _ = factors[t][m]
                w.write(f"{PREFIX}{m}.lora_A.weight", A)
                w.write(f"{PREFIX}{m}.lora_B.weight", B)
        for t, w in zip(tasks, writers):
            w.close()
            with atomic_dir(where / t, overwrite=True) as out:
                (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                os.replace(Path(tmp) / f"{t}.safetensors", out / WEIGHTS_NAME)
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    return dirs


def llama_base_params(preset, vocab: int = LLAMA3_VOCAB) -> int:
    """Parameters of the Llama base model of ``preset``'s shapes: embeddings and LM head (untied), the adapted
    projections, RMSNorm weights (the MLP counts only when the preset has ``d_ff``)."""
    linear = sum(d_out * d_in for d_out, d_in in preset.modules().values())
    return 2 * vocab * preset.d_model + linear + (2 * preset.n_layers + 1) * preset.d_model


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        return None
    return None


def _layers(modules: Sequence[str], layers: Sequence[int] | None) -> list[str]:
    if layers is None:
        return list(modules)
    keep = {f"model.layers.{i}." for i in layers}
    return [m for m in modules if any(m.startswith(k) for k in keep)]


def run_method(spec: dict) -> dict:
    """Run one method of ``spec`` in this process (see the module docstring); returns its record."""
    import torch

    from ..adapters import load_adapters
    from ..lazy import load_adapters_lazy
    from .machine import hwm_mib, rss_mib

    method, dirs, scratch = spec["method"], spec["dirs"], Path(spec["scratch"])
    start_rss = rss_mib()
    t0 = time.perf_counter()
    lazy = spec.get("lazy", True)
    aset = load_adapters_lazy(dirs) if lazy else load_adapters(dirs)
    record: dict = {"method": method, "lazy": lazy, "n_tasks": len(dirs), "modules": len(aset.modules),
                    "threads": torch.get_num_threads()}
    if method in ("hydraopt-task", "hydraopt-1"):
        from ..merge.hydraopt import hydraopt
        from ..merge.hydraopt.stream import hydraopt_to_bundle

        heads = "task" if method == "hydraopt-task" else 1
        if lazy:
            result = hydraopt_to_bundle(aset, scratch / "bundle", heads=heads, rank=spec["rank"], progress=False)
        else:
            result = hydraopt(aset, heads=heads, rank=spec["rank"], progress=False)
            result.save(scratch / "bundle")
        record.update(loss=result.total_loss, floor=result.total_floor, energy=result.total_energy,
                      heads=result.n_heads, bundle_bytes=(scratch / "bundle" / "hydraopt.safetensors").stat().st_size)
    elif method == "ties":
        from ..merge.streamed import ties_streamed

        modules = _layers(aset.modules, spec.get("ties_layers"))
        merged = ties_streamed(aset, spec.get("density", 0.5), rank=spec["rank"], modules=modules)
        record.update(modules_run=len(modules), layers_run=spec.get("ties_layers") or "all",
                      truncation=float(sum(merged.truncation.values())))
    elif method == "int4":
        from ..compress.stream import quantize_to_file

        file = quantize_to_file(aset, scratch / "int4", codec="int4")
        record.update(file_bytes=file.stat().st_size)
    else:
        raise ValueError(f"unknown out-of-core method {method!r}")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["start_rss_mib"] = round(start_rss or 0.0, 1)
    record["peak_rss_mib"] = round(hwm_mib(), 1)
    if method == "ties" and record["modules_run"] < record["modules"]:
        record["seconds_extrapolated_all_layers"] = round(record["seconds"] * record["modules"] / record["modules_run"], 2)
        record["extrapolated"] = (f"measured on layers {record['layers_run']} ({record['modules_run']} of "
                                  f"{record['modules']} modules); all layers extrapolated linearly in modules")
    return record


def _peft_record(preset) -> dict:
    params = llama_base_params(preset)
    need, avail = params * 4, _available_bytes()
    record = {"method": "peft-svd", "status": "not run", "base_params": params, "base_fp32_bytes": need,
              "available_bytes": avail}
    gib = 1 << 30
    if avail is not None and need > avail:
        record["why"] = (f"peft's add_weighted_adapter needs the base model in memory: fp32 {need / gib:.1f} GiB "
                         f"> available RAM {avail / gib:.1f} GiB")
    else:
        record["why"] = (f"peft's add_weighted_adapter on a {params / 1e9:.1f}B-parameter model (fp32 "
                         f"{need / gib:.1f} GiB) is outside this benchmark's budget")
    return record


def run_out_of_core(preset, methods: Sequence[str], *, lazy: bool = True, seed: int = 0, dtype: str = "bfloat16",
                    ties_layers: Sequence[int] | None = None, n_tasks: int | None = None, timeout: float = 3600,
                    scratch: str | Path | None = None) -> list[dict]:
    """Run ``methods`` on ``preset``'s adapters from disk, each in a fresh process; returns the records."""
    dirs = [str(d) for d in ensure_adapters(preset, seed, dtype)]
    if n_tasks is not None:
        dirs = dirs[: int(n_tasks)]
    records = []
    for method in methods:
        if method == "peft-svd":
            records.append(_peft_record(preset))
            continue
        with tempfile.TemporaryDirectory(dir=scratch or cache_dir(), prefix=".run-") as tmp:
            spec = {"method": method, "dirs": dirs, "scratch": tmp, "lazy": lazy, "rank": preset.rank,
                    "ties_layers": list(ties_layers) if ties_layers is not None else None}
            (Path(tmp) / "spec.json").write_text(json.dumps(spec))
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "hydralib.bench.outofcore", str(Path(tmp) / "spec.json"),
                                   str(Path(tmp) / "result.json")], capture_output=True, text=True, timeout=timeout)
            wall = time.perf_counter() - t0
            result_file = Path(tmp) / "result.json"
            if proc.returncode != 0 or not result_file.is_file():
                lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
                records.append({"method": method, "lazy": lazy, "status": "error", "why": lines[-1] if lines else ""})
                continue
            record = json.loads(result_file.read_text())
            record.update(status="ok", process_wall_s=round(wall, 2))
            records.append(record)
    return records


def out_of_core_suite(preset, methods: Sequence[str], *, ties_layers: Sequence[int] | None = None,
                      tasks_grid: Sequence[int] | None = None, compare_eager: bool = False, seed: int = 0,
                      dtype: str = "bfloat16", command: str | None = None, echo=print) -> dict:
    """The benchmark's JSON: ``methods`` on the lazy set of all N adapters; with ``compare_eager`` the HydraOpt
    methods again on the eager set; with ``tasks_grid`` exact HydraOpt (K = N) lazy and eager at each N."""
    from .machine import machine_info

    import torch

    dirs = ensure_adapters(preset, seed, dtype)
    from .report import SCHEMA

    out = {"schema": SCHEMA, "kind": "out-of-core", "preset": preset.as_dict(), "command": command, "seed": seed,
           "adapters": {"dtype": dtype, "root": "$HYDRALIB_CACHE (or ~/.cache/hydralib/bench)",
                        "bytes": sum((Path(d) / "adapter_model.safetensors").stat().st_size for d in dirs)},
           "machine": machine_info("cpu", torch.get_num_threads()), "records": []}

    def add(records):
        for r in records:
            out["records"].append(r)
            echo(_line(r))

    add(run_out_of_core(preset, methods, seed=seed, dtype=dtype, ties_layers=ties_layers))
    if compare_eager:
        add(run_out_of_core(preset, [m for m in methods if m.startswith("hydraopt")], lazy=False, seed=seed,
                            dtype=dtype))
    for n in tasks_grid or []:
        for lazy in (True, False):
            add(run_out_of_core(preset, ["hydraopt-task"], lazy=lazy, seed=seed, dtype=dtype, n_tasks=n))
    from .machine import load_average

    out["load_after"] = load_average()
    out["comparisons"] = lazy_eager_ratios(out["records"])
    return out


def lazy_eager_ratios(records: Sequence[dict]) -> dict:
    """``{"<method> N=<n>": {"time_lazy_over_eager", "peak_lazy_over_eager"}}`` for every method and N measured
    both lazily and eagerly (computed from the records of one run)."""
    ok = {(r["method"], r["n_tasks"], r["lazy"]): r for r in records if r.get("status") == "ok"}
    out = {}
    for (method, n, lazy), r in sorted(ok.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        eager = ok.get((method, n, False))
        if lazy and eager is not None:
            out[f"{method} N={n}"] = {"time_lazy_over_eager": round(r["seconds"] / eager["seconds"], 3),
                                      "peak_lazy_over_eager": round(r["peak_rss_mib"] / eager["peak_rss_mib"], 3)}
    return out


def _line(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r['method']}: {r.get('status')}: {r.get('why', '')}"
    extra = f" ({r['extrapolated']}: {r['seconds_extrapolated_all_layers']} s)" if "extrapolated" in r else ""
    return (f"{r['method']} {'lazy' if r['lazy'] else 'eager'} N={r['n_tasks']}: {r['seconds']} s, peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB{extra}")


def text_table(result: dict) -> str:
    """The records of :func:`out_of_core_suite` as a text table."""
    from ..tables import text_table as table

    rows = []
    for r in result["records"]:
        if r.get("status") != "ok":
            rows.append([r["method"], "", "", "", "", r.get("why", r.get("status", ""))])
            continue
        note = r.get("extrapolated", "")
        if note:
            note = f"{note}: {r['seconds_extrapolated_all_layers']} s"
        rows.append([r["method"], "lazy" if r["lazy"] else "eager", str(r["n_tasks"]), f"{r['seconds']:.1f}",
                     f"{r['peak_rss_mib']:.0f}", note])
    return table(rows, ["method", "set", "N", "seconds", "peak RSS MiB", "note"])


OOC_LABELS = {"hydraopt-task": "exact HydraOpt, K = N, r' = r", "hydraopt-1": "exact HydraOpt, K = 1, r' = r",
              "ties": "TIES (dW space, density 0.5), rank r", "int4": "int4 per adapter", "peft-svd": "peft svd merge"}


def table_rows(result: dict) -> tuple[list[list[str]], list[str]]:
    """``(rows, header)`` of the records at the full N for a book table: seconds, peak RSS (GB) and output GB;
    a method that was not run says why; a TIES run on some layers shows its measured time and the extrapolation."""
    n_full = int(result["preset"]["n_tasks"])
    rows = []
    for r in result["records"]:
        label = OOC_LABELS.get(r["method"], r["method"])
        if r.get("status") != "ok":
            rows.append([label, "", "", "", "", r.get("why", r.get("status", ""))])
            continue
        if r["n_tasks"] != n_full:
            continue
        out_bytes = r.get("bundle_bytes", r.get("file_bytes"))
        seconds = f"{r['seconds']:,.1f}"
        note = ""
        if "extrapolated" in r:
            seconds = f"{r['seconds_extrapolated_all_layers']:,.0f} (extrapolated)"
            note = f"measured {r['seconds']:,.0f} s on {r['modules_run']} of {r['modules']} modules"
        rows.append([label, "lazy" if r["lazy"] else "eager", seconds, f"{r['peak_rss_mib'] * (1 << 20) / 1e9:.2f}",
                     "" if out_bytes is None else f"{out_bytes / 1e9:.2f}", note])
    return rows, ["method", "adapters read", "seconds", "peak RSS GB", "output GB", "note"]


def memory_series(result: dict, method: str = "hydraopt-task") -> dict[str, tuple[list[int], list[float]]]:
    """``{"lazy"|"eager": ([N...], [peak RSS MiB...])}`` of ``method`` over the N a result measured."""
    out: dict[str, dict[int, float]] = {}
    for r in result["records"]:
        if r.get("status") == "ok" and r["method"] == method:
            out.setdefault("lazy" if r["lazy"] else "eager", {})[int(r["n_tasks"])] = float(r["peak_rss_mib"])
    return {k: (sorted(v), [v[n] for n in sorted(v)]) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hydralib.bench.outofcore SPEC.json RESULT.json``: one method in this fresh process."""
    spec_path, result_path = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(spec_path).read_text())
    record = run_method(spec)
    Path(result_path).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
