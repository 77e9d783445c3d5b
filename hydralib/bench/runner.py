"""Run the method comparison: one adapter set, every method side by side, one JSON.

:func:`run_benchmark` draws the structured synthetic adapters of a preset
(:mod:`.adapters`), writes them as PEFT directories (so that our methods and
peft's read the very same adapters), then measures each method: in a fresh
``python -m hydralib.bench.worker`` process per method (``isolate=True``, the
CPU default: each peak memory is that method's alone), or all in this process
(``isolate=False``; the CUDA default, where the peak is
``torch.cuda.max_memory_allocated``). With ``out``, the JSON is rewritten after
every method (``"complete": false`` until the end), atomically.

Example
-------
>>> from hydralib.bench import bench_preset, run_benchmark
>>> result = run_benchmark(bench_preset("smollm2", n_tasks=3, n_layers=1), methods=["hydraopt-exact", "ta-dense"],
...                        repeats=1, isolate=False, progress=False)
>>> sorted(result["methods"]), result["complete"]
(['hydraopt-exact', 'ta-dense'], True)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from ..synthetic import STRUCTURE, structured_factors, write_peft_dirs
from .machine import THREAD_ENV, load_average, machine_info, resolve_device, set_threads, thread_env
from .methods import check_methods
from .presets import BenchPreset
from .report import SCHEMA, summarise, write_json

__all__ = ["run_benchmark", "run_worker_process", "PACKAGE_ROOT"]

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def run_worker_process(spec: dict, threads: int | str, workdir: str | Path) -> dict:
    """Run ``spec`` in a fresh ``python -m hydralib.bench.worker`` process with ``threads`` fixed (or ``"default"``:
    nothing fixed); return its result."""
    workdir = Path(workdir)
    fd, spec_path = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=workdir)
    os.close(fd)
    result_path = spec_path.replace("spec-", "result-")
    log_path = spec_path.replace("spec-", "log-").replace(".json", ".txt")
    Path(spec_path).write_text(json.dumps(spec))
    if threads == "default":  # no thread variable: the libraries' own defaults (``hydralib bench --threads-compare``)
        env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    else:
        env = dict(os.environ, **thread_env(int(threads)))
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "hydralib.bench.worker", spec_path, result_path],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(PACKAGE_ROOT))
    try:
        result = json.loads(Path(result_path).read_text())
    except (OSError, ValueError):
        tail = Path(log_path).read_text()[-1500:] if Path(log_path).exists() else ""
        result = {"error": f"worker exited with status {proc.returncode} and no result (killed? out of memory?)",
                  "traceback": tail}
    for path in (spec_path, result_path, log_path):
        Path(path).unlink(missing_ok=True)
    return result


def _error_record(name: str, result: dict) -> dict:
    from .methods import METHODS

    m = METHODS[name]
    return {"method": name, "family": m.family, "space": m.space, "output": m.output, "description": m.description,
            "status": "error", "error": result.get("error", "unknown error"), "traceback": result.get("traceback", ""),
            "seconds": [], "repeats_done": 0, "median_s": None}


def _line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['method']:<20} error: {record['error']}"
    mem = record.get("memory", {})
    peak = mem.get("cuda_peak_mib", mem.get("run_peak_mib"))
    return (f"{record['method']:<20} median {record['median_s']:.3f} s over {record['repeats_done']} "
            f"| peak {peak:.0f} MiB | loss/energy {record.get('quality', {}).get('loss_rel', float('nan')):.4f}")


def run_benchmark(
    preset: BenchPreset,
    methods: Sequence[str] | None = None,
    *,
    repeats: int = 3,
    budget_s: float = 120.0,
    device: str | None = "cpu",
    threads: int | None = None,
    isolate: bool | None = None,
    seed: int = 0,
    density: float = 0.5,
    target_ratio: float = 0.01,
    adam_max_steps: int = 3000,
    out: str | Path | None = None,
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = True,
    workdir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Measure ``methods`` (default all) on the structured adapters of ``preset``; return (and write) the result.

    ``threads``: torch / BLAS threads (default 1 on CPU; on CUDA the default
    is left to torch). ``isolate``: a fresh process per method (default: True
    on CPU, False on CUDA). ``budget_s``: a method stops repeating once its
    repeats took this long (it always runs once). ``out``: JSON path (refused
    if it exists, unless ``overwrite``).
    """
    from tqdm.auto import tqdm

    from ..atomic import check_writable

    methods = check_methods(methods)
    device = resolve_device(device)
    if threads is None:
        threads = 1 if device == "cpu" else max(1, min(8, os.cpu_count() or 1))
    if isolate is None:
        isolate = device == "cpu"
    if out is not None:
        check_writable(out, overwrite)
    echo = echo or (lambda text: tqdm.write(text, file=sys.stderr))
    set_threads(threads)
    result = {
        "schema": SCHEMA, "kind": "methods", "complete": False, "command": command,
        "preset": preset.as_dict(),
        "adapters": {"structure": dict(STRUCTURE), "seed": seed, "scaling": 2.0, "dtype": "float32"},
        "settings": {"methods": methods, "repeats": repeats, "budget_s": budget_s, "device": device, "threads": threads,
                     "isolate": isolate, "density": density, "target_ratio": target_ratio, "heads": "task (K = N)",
                     "rank_out": preset.rank, "adam_max_steps": adam_max_steps},
        "machine": machine_info(device, threads),
        "methods": {},
    }
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hydralib-bench-")) if own_tmp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    written = [False]

    def save(final: bool) -> None:
        if out is None:
            return
        result.update(summarise(result))  # ratios so far: a run cut short still says what it measured
        write_json(result, out, overwrite=overwrite or written[0])
        written[0] = True

    try:
        t0 = time.perf_counter()
        factors, metadata = structured_factors(preset, seed)
        dirs = write_peft_dirs(factors, metadata, workdir / "adapters")
        tasks = list(factors)
        del factors
        result["adapters"].update(generate_s=round(time.perf_counter() - t0, 2), n_tasks=len(tasks),
                                  bytes=int(sum(f.stat().st_size for d in dirs for f in d.iterdir())))
        spec = {
            "adapters": {"dirs": [str(d) for d in dirs], "tasks": tasks},
            "shapes": {"n_layers": preset.n_layers, "d_model": preset.d_model, "d_kv": preset.d_kv},
            "repeats": repeats, "budget_s": budget_s, "device": device, "threads": threads, "rank": preset.rank,
            "density": density, "seed": seed, "target_ratio": target_ratio, "adam_max_steps": adam_max_steps,
        }
        ctx = None
        bar = tqdm(methods, desc=f"bench {preset.name}", disable=not progress, leave=False)
        for name in bar:
            bar.set_postfix_str(name)
            if isolate:
                got = run_worker_process(dict(spec, methods=[name]), threads, workdir)
            else:
                from .worker import run_methods, setup_context

                if ctx is None:
                    ctx = setup_context(dict(spec, methods=methods))
                got = run_methods(dict(spec, methods=[name]), ctx=ctx)
            record = got["records"][name] if "records" in got else _error_record(name, got)
            result["methods"][name] = record
            echo(_line(record))
            save(False)
        bar.close()
        del ctx
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(workdir / "adapters", ignore_errors=True)
    result["machine"]["load_after"] = load_average()
    result["machine"]["time_end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result.update(summarise(result))
    result["complete"] = True
    save(True)
    return result
