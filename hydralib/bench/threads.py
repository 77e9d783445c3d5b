"""The default thread setting against one thread, side by side, and the whole process against peft's.

``hydralib bench --threads-compare`` answers what a user gets without any
setting. For each of ``repeats`` rounds, and in each round for each setting
in turn (``"1"``: every BLAS/OpenMP pool fixed at one thread;
``"default"``: no thread variable at all, torch's and the BLAS libraries' own
defaults), it runs every method once in a fresh worker process
(:mod:`.worker`), so the two settings alternate and share the machine's load.
The ratio ``default / 1`` of the median times is recorded per method.

On real adapters (``dirs``: the committed zoo, say) it also times two whole
processes, wall clock from start to exit, each under both settings:

* ``hydralib merge DIRS --heads 1 --rank R --out ...`` (reading the 40 PEFT
  directories, the merge, writing the bundle);
* peft's path: a Llama of the adapters' shapes (random weights) built, the 40
  adapters loaded with ``PeftModel.load_adapter`` and merged with
  ``add_weighted_adapter(combination_type="svd")`` (:func:`peft_svd_process`).

Example
-------
>>> result = compare_threads(["adapters/a", "adapters/b"], methods=["hydraopt-exact"])  # doctest: +SKIP
>>> result["methods"]["hydraopt-exact"]["ratio_default_to_one"]                          # doctest: +SKIP
0.81
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from .machine import THREAD_ENV, load_average, machine_info, thread_env

__all__ = ["SETTINGS", "compare_threads", "setting_env", "adapter_shapes", "peft_svd_process", "thread_targets", "text_report", "table_rows"]

#: The two settings compared: one thread everywhere, and nothing set (the libraries' defaults).
SETTINGS = ("1", "default")


def setting_env(setting: str) -> dict[str, str]:
    """The environment of a child process under ``setting`` (``"1"``, ``"default"`` or a thread count)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    if setting != "default":
        env.update(thread_env(int(setting)))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def adapter_shapes(aset) -> dict[str, int]:
    """``{"n_layers", "d_model", "d_kv"}`` of the Llama-style attention modules an adapter set adapts."""
    layers = {m.split(".layers.")[1].split(".")[0] for m in aset.modules if ".layers." in m}
    q = next(m for m in aset.modules if m.endswith("q_proj"))
    k = next((m for m in aset.modules if m.endswith("k_proj")), q)
    return {"n_layers": len(layers), "d_model": aset.module_info(q).d_in, "d_kv": aset.module_info(k).d_out}


def peft_svd_process(dirs: Sequence[str], tasks: Sequence[str], shapes: dict, rank: int) -> None:
    """peft's whole path in this process: build the model, load every adapter, merge with ``svd`` at ``rank``."""
    import torch

    from .peft_model import load_peft_model

    model = load_peft_model(dirs, tasks, shapes["n_layers"], shapes["d_model"], shapes["d_kv"])
    with torch.no_grad():
        model.add_weighted_adapter(list(tasks), [1.0 / len(tasks)] * len(tasks), "merged", combination_type="svd",
                                   svd_rank=int(rank))


def _timed(argv: list[str], env: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"status": "error", "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return {"status": "ok", "wall_s": round(wall, 3)}


def _summary(runs: dict[str, list[float]]) -> dict:
    medians = {s: statistics.median(v) if v else None for s, v in runs.items()}
    out = {"seconds": {s: [round(x, 4) for x in v] for s, v in runs.items()},
           "median_s": {s: (round(m, 4) if m is not None else None) for s, m in medians.items()}}
    if medians.get("1") and medians.get("default"):
        out["ratio_default_to_one"] = round(medians["default"] / medians["1"], 3)
        out["ratios_per_round"] = [round(d / o, 3) for o, d in zip(runs["1"], runs["default"])]
    return out


def compare_threads(
    dirs: Sequence[str | Path] | None = None,
    *,
    preset=None,
    methods: Sequence[str] = ("hydraopt-exact", "hydraopt-exact-k1"),
    rank: int | None = None,
    repeats: int = 3,
    whole_process: bool = True,
    command: str | None = None,
    echo: Callable[[str], None] = print,
    workdir: str | Path | None = None,
) -> dict:
    """Time ``methods`` under one thread and under the default setting, alternating; return the result dict.

    ``dirs``: PEFT adapter directories (then ``rank`` defaults to their largest rank and the whole-process
    comparison runs, unless ``whole_process=False``); or ``preset``: a :class:`~.presets.BenchPreset`, whose
    structured synthetic adapters are written to a temporary directory first (methods only).
    """
    from ..adapters import load_adapters
    from ..synthetic import structured_factors, write_peft_dirs
    from .runner import PACKAGE_ROOT, run_worker_process

    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="hydralib-threads-")) if own_tmp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from .report import SCHEMA

    result = {"schema": SCHEMA, "kind": "threads", "command": command, "settings": {"compared": list(SETTINGS), "repeats": repeats,
                                                                  "methods": list(methods)},
              "machine": machine_info("cpu", os.cpu_count() or 1), "methods": {}, "whole_process": {}}
    try:
        if preset is not None:
            factors, metadata = structured_factors(preset, 0)
            dirs = write_peft_dirs(factors, metadata, workdir / "adapters")
            del factors
            result["adapters"] = {"preset": preset.as_dict()}
            whole_process = False
        dirs = [str(d) for d in dirs]
        aset = load_adapters(dirs)
        tasks = list(aset.tasks)
        rank = int(rank or max(aset.rank(t, m) for t in tasks for m in aset.modules))
        shapes = adapter_shapes(aset)
        result.setdefault("adapters", {}).update(n_tasks=len(tasks), n_modules=len(aset.modules), rank=rank,
                                                 shapes=shapes, dirs=dirs if preset is None else None)
        del aset
        spec = {"adapters": {"dirs": dirs, "tasks": tasks}, "shapes": shapes, "repeats": 1, "budget_s": 0.0,
                "device": "cpu", "rank": rank, "density": 0.5, "seed": 0}
        times = {m: {s: [] for s in SETTINGS} for m in methods}
        whole = {"hydralib merge --heads 1": {s: [] for s in SETTINGS}, "peft svd merge": {s: [] for s in SETTINGS}}
        out_dir = workdir / "merged"
        merge_argv = [sys.executable, "-m", "hydralib.cli", "merge", *dirs, "--heads", "1", "--rank", str(rank),
                      "--out", str(out_dir), "--overwrite"]
        peft_argv = [sys.executable, "-c", "import json, sys; from hydralib.bench.threads import peft_svd_process; "
                     "peft_svd_process(*json.loads(sys.argv[1]))",
                     __import__("json").dumps([dirs, tasks, shapes, rank])]
        for round_ in range(int(repeats)):
            for setting in SETTINGS:
                for name in methods:
                    got = run_worker_process(dict(spec, methods=[name], threads=setting), setting, workdir)
                    record = got.get("records", {}).get(name, {})
                    if record.get("status") != "ok":
                        raise RuntimeError(f"{name} under threads={setting}: {record.get('error') or got.get('error')}")
                    times[name][setting].append(record["seconds"][0])
                    echo(f"round {round_ + 1} threads={setting:<7} {name:<20} {record['seconds'][0]:.3f} s")
                if whole_process:
                    env = dict(setting_env(setting), PYTHONPATH=str(PACKAGE_ROOT))
                    for label, argv in (("hydralib merge --heads 1", merge_argv), ("peft svd merge", peft_argv)):
                        got = _timed(argv, env)
                        if got["status"] != "ok":
                            raise RuntimeError(f"{label} under threads={setting}: {got['error']}")
                        whole[label][setting].append(got["wall_s"])
                        echo(f"round {round_ + 1} threads={setting:<7} {label:<24} {got['wall_s']:.2f} s wall")
        result["methods"] = {m: _summary(t) for m, t in times.items()}
        if whole_process:
            result["whole_process"] = {label: _summary(t) for label, t in whole.items()}
            ours, peft = (result["whole_process"][k]["median_s"] for k in ("hydralib merge --heads 1", "peft svd merge"))
            result["whole_process"]["peft_to_hydralib_default"] = round(peft["default"] / ours["default"], 2)
            result["whole_process"]["peft_one_thread_to_hydralib_default"] = round(peft["1"] / ours["default"], 2)
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"]["load_after"] = load_average()
    result["machine"]["time_end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["targets"] = thread_targets(result)
    return result


def thread_targets(result: dict) -> list[dict]:
    """The targets: the default setting is never slower than one thread; hydralib's merge >= 10x peft's svd merge."""
    targets = [{"target": f"{m}: default threads time / one thread time <= 1", "value": r["ratio_default_to_one"],
                "threshold": 1.0, "met": r["ratio_default_to_one"] <= 1.0}
               for m, r in result["methods"].items() if "ratio_default_to_one" in r]
    whole = result.get("whole_process") or {}
    for label in ("hydralib merge --heads 1", "peft svd merge"):
        if label in whole and "ratio_default_to_one" in whole[label]:
            r = whole[label]["ratio_default_to_one"]
            targets.append({"target": f"{label} (whole process): default / one thread <= 1", "value": r,
                            "threshold": 1.0, "met": r <= 1.0})
    if "peft_to_hydralib_default" in whole:
        r = whole["peft_to_hydralib_default"]
        targets.append({"target": "peft svd merge / hydralib merge --heads 1, whole process, default threads >= 10",
                        "value": r, "threshold": 10.0, "met": r >= 10.0})
    return targets


def text_report(result: dict) -> str:
    """The ratios and targets of a thread comparison as plain text."""
    lines = [f"{'method':<26} {'1 thread':>10} {'default':>10} {'default/1':>10}"]
    rows = list(result["methods"].items()) + [(k, v) for k, v in (result.get("whole_process") or {}).items()
                                              if isinstance(v, dict)]
    for name, r in rows:
        med = r["median_s"]
        lines.append(f"{name:<26} {med['1']:>9.3f}s {med['default']:>9.3f}s {r.get('ratio_default_to_one', 0):>10.2f}")
    for t in result["targets"]:
        lines.append(f"{'met' if t['met'] else 'NOT met':<8} {t['target']}: {t['value']}")
    return "\n".join(lines)


def table_rows(results: dict[str, dict]) -> tuple[list[list], list[str]]:
    """One row per (adapter set, method) of thread comparisons ``{label: result}``: medians and their ratio."""
    rows = []
    for label, result in results.items():
        timed = list(result["methods"].items()) + [(k, v) for k, v in (result.get("whole_process") or {}).items()
                                                   if isinstance(v, dict)]
        for name, r in timed:
            med = r["median_s"]
            rows.append([label, f"`{name}`", f"{med['1']:.2f}", f"{med['default']:.2f}",
                         f"{r['ratio_default_to_one']:.2f}"])
    return rows, ["adapters", "method", "1 thread (s)", "default (s)", "default / 1"]
