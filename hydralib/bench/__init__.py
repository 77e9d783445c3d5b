"""Benchmarks: how fast and how light merging is, against peft and against the iterative solver.

* :mod:`.presets` - shapes of the synthetic adapter sets (``smollm2``, ``llama-3.2-1b``, ``llama-3.1-8b``);
* :mod:`hydralib.synthetic` (:func:`~hydralib.synthetic.structured_factors`) - the structured synthetic
  adapters, written as PEFT directories;
* :mod:`.methods` - the timed methods, registered by name (HydraOpt exact / Adam,
  our dW baselines, peft's ``add_weighted_adapter`` paths);
* :mod:`.peft_model` - a Llama of the same shapes with the adapters loaded by peft;
* :mod:`.machine` - threads, load, device, peak memory probes;
* :mod:`.worker` - one method in one process: repeats, median, peak memory;
* :mod:`.runner` - every method side by side in one run, one JSON;
* :mod:`.scaling` - time and memory against N, hidden size and rank, log-log slopes;
* :mod:`.outofcore` - adapters read lazily from disk (8B scale), each method in a fresh process, lazy against eager;
* :mod:`.report` - ratios, the issue's targets, tables, JSON I/O;
* :mod:`.plots` - scaling curves on a matplotlib Axes;
* :mod:`.cli` - ``hydralib bench``.

Example
-------
>>> from hydralib.bench import bench_preset, run_benchmark
>>> result = run_benchmark(bench_preset("smollm2", n_tasks=3, n_layers=1), methods=["hydraopt-exact", "ta-dense"],
...                        repeats=1, isolate=False, progress=False)
>>> result["methods"]["hydraopt-exact"]["status"]
'ok'
"""

from .methods import DEFAULT_METHODS, METHODS
from .presets import BENCH_PRESETS, BenchPreset, bench_preset
from .report import load_result, summarise, text_report, write_json
from .runner import run_benchmark
from .scaling import GRIDS, run_scaling

__all__ = ["DEFAULT_METHODS", "METHODS", "BENCH_PRESETS", "BenchPreset", "bench_preset", "load_result", "summarise",
           "text_report", "write_json", "run_benchmark", "GRIDS", "run_scaling"]
