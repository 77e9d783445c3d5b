"""``hydralib bench``: arguments and the run (registered in :data:`hydralib.cli.COMMANDS`).

Examples
--------
    hydralib bench --preset llama-3.2-1b --out bench.json            # every method, 40 adapters, r=32
    hydralib bench --preset smollm2 --tasks 5 --methods hydraopt-exact ta-dense --repeats 3
    hydralib bench --scaling --out scaling.json                      # default grid (minutes on 2 cores)
    hydralib bench --scaling --grid full --out scaling-full.json     # N to 200, d to 4096, r to 64
    hydralib bench --preset llama-3.2-1b --device cuda --repeats 3 --out gpu.json
    hydralib bench --threads-compare --adapters data/adapters/lora/* --out threads-zoo.json  # default vs 1 thread
    hydralib bench --threads-compare --preset llama-3.2-1b --out threads-1b.json
"""

from __future__ import annotations

import argparse
import sys

from ..errors import HydraError
from .methods import METHODS
from .presets import BENCH_PRESETS

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "methods: " + ", ".join(METHODS) + "\n"
        "Adapters are synthetic and structured (80% of every A shared, half of every B shared within 5 groups,\n"
        "each task's factors in a random basis of its rank space); HydraOpt uses one head per task and r' = r.\n"
        "CPU: each method runs in a fresh process (peak RSS is its own); CUDA: one process, torch's peak counter."
    )
    p.add_argument("--preset", default="smollm2", choices=sorted(BENCH_PRESETS),
                   help="adapter shapes (default smollm2; the issue's paper scale is llama-3.2-1b)")
    p.add_argument("--tasks", type=int, default=None, metavar="N", help="number of adapters (preset: 40)")
    p.add_argument("--rank", type=int, default=None, metavar="R", help="LoRA rank of the adapters and of the outputs")
    p.add_argument("--d-model", type=int, default=None, metavar="D", help="hidden size (k/v keep the preset's ratio)")
    p.add_argument("--d-kv", type=int, default=None, metavar="D", help="key/value width")
    p.add_argument("--layers", type=int, default=None, metavar="L", help="number of decoder layers")
    p.add_argument("--methods", nargs="+", default=["all"], metavar="METHOD",
                   help="methods to run (default all; with --scaling: hydraopt-exact ta-dense)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions per method; the median is reported (default 3)")
    p.add_argument("--budget", type=float, default=120.0, metavar="SECONDS",
                   help="stop repeating a method once its runs took this long (it always runs once; default 120)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/BLAS threads, fixed and recorded (default 1 on CPU: the machine may be shared)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one fresh process per method (default: yes on CPU, no on CUDA)")
    p.add_argument("--density", type=float, default=0.5, help="fraction kept by TIES / DARE (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic adapters and of DARE (default 0)")
    p.add_argument("--scaling", action="store_true",
                   help="measure scaling curves (time and memory against N, hidden size, rank) instead")
    p.add_argument("--grid", default="default", choices=["default", "full", "tiny"],
                   help="scaling grid: default (minutes on 2 cores), full (N to 200, d to 4096, r to 64), tiny")
    p.add_argument("--threads-compare", action="store_true",
                   help="time the methods (default hydraopt-exact hydraopt-exact-k1) under one thread and under the "
                        "default setting, alternating, each run in a fresh process; with --adapters also the whole "
                        "process of `hydralib merge --heads 1` against peft's svd merge")
    p.add_argument("--adapters", nargs="+", default=None, metavar="DIR",
                   help="--threads-compare: real PEFT adapter directories or glob patterns instead of a preset")
    p.add_argument("--out-of-core", action="store_true",
                   help="merge from PEFT directories on disk (written once under $HYDRALIB_CACHE), each method in a "
                        "fresh process, lazily: methods hydraopt-task hydraopt-1 ties int4 peft-svd")
    p.add_argument("--ties-layers", type=int, nargs="+", default=None, metavar="L",
                   help="--out-of-core: run TIES on these layers only and extrapolate (stated in the JSON)")
    p.add_argument("--tasks-grid", type=int, nargs="+", default=None, metavar="N",
                   help="--out-of-core: exact HydraOpt (K = N) lazy and eager at each of these N")
    p.add_argument("--store-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="--out-of-core: dtype the generated adapters are stored in (default bfloat16)")
    p.add_argument("--compare-eager", action="store_true",
                   help="--out-of-core: run the HydraOpt methods on the eager set too")
    p.add_argument("--out", default=None, help="JSON file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-method lines")


def run(args) -> int:
    try:
        return _run(args)
    except ValueError as exc:  # bad numbers (e.g. --tasks 0): one line, exit 1
        if isinstance(exc, HydraError):
            raise
        raise HydraError(str(exc)) from exc


def _run(args) -> int:
    from .methods import check_methods

    for name in ("repeats", "threads", "tasks", "rank", "d_model", "d_kv", "layers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise HydraError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    command = "hydralib " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    echo = (lambda text: None) if args.quiet else None
    if args.out_of_core:
        from .outofcore import OOC_METHODS, out_of_core_suite, text_table
        from .presets import bench_preset

        if args.out:
            from ..atomic import check_writable

            check_writable(args.out, args.overwrite)
        methods = list(OOC_METHODS) if args.methods == ["all"] else args.methods
        unknown = [m for m in methods if m not in OOC_METHODS]
        if unknown:
            raise HydraError(f"--out-of-core: unknown methods {unknown}; choose from {list(OOC_METHODS)}")
        preset = bench_preset(args.preset, n_tasks=args.tasks, rank=args.rank, n_layers=args.layers)
        result = out_of_core_suite(preset, methods, ties_layers=args.ties_layers, tasks_grid=args.tasks_grid,
                                   compare_eager=args.compare_eager, seed=args.seed, dtype=args.store_dtype,
                                   command=command, echo=echo or print)
        if args.out:
            from .report import write_json

            write_json(result, args.out, overwrite=args.overwrite)
        print(text_table(result))
    elif args.threads_compare:
        from .threads import compare_threads, text_report

        methods = ["hydraopt-exact", "hydraopt-exact-k1"] if args.methods == ["all"] else check_methods(args.methods)
        if args.out:
            from ..atomic import check_writable

            check_writable(args.out, args.overwrite)
        if args.adapters:
            from ..adapters import expand_sources

            result = compare_threads(expand_sources(args.adapters), methods=methods, rank=args.rank,
                                     repeats=args.repeats, command=command, echo=echo or print)
        else:
            from .presets import bench_preset

            preset = bench_preset(args.preset, n_tasks=args.tasks, rank=args.rank, d_model=args.d_model,
                                  d_kv=args.d_kv, n_layers=args.layers)
            result = compare_threads(preset=preset, methods=methods, repeats=args.repeats, command=command,
                                     echo=echo or print)
        if args.out:
            from .report import write_json

            write_json(result, args.out, overwrite=args.overwrite)
        print(text_report(result))
    elif args.scaling:
        from .scaling import SCALING_METHODS, run_scaling, slopes_text

        methods = SCALING_METHODS if args.methods == ["all"] else check_methods(args.methods)
        result = run_scaling(args.grid, methods, repeats=args.repeats, budget_s=args.budget, device=args.device,
                             threads=args.threads, isolate=args.isolate, seed=args.seed, out=args.out,
                             overwrite=args.overwrite, command=command, progress=not args.quiet, echo=echo)
        print(slopes_text(result))
    else:
        from .presets import bench_preset
        from .report import text_report
        from .runner import run_benchmark

        preset = bench_preset(args.preset, n_tasks=args.tasks, rank=args.rank, d_model=args.d_model, d_kv=args.d_kv,
                              n_layers=args.layers)
        result = run_benchmark(preset, check_methods(args.methods), repeats=args.repeats, budget_s=args.budget,
                               device=args.device, threads=args.threads, isolate=args.isolate, seed=args.seed,
                               density=args.density, out=args.out, overwrite=args.overwrite, command=command,
                               progress=not args.quiet, echo=echo)
        print(text_report(result))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0

