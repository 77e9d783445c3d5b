"""Other adapter types: the zoo's DoRA and AdaLoRA groups, trained, stored and kept in fewer bytes.

``python -m hydralib.suite.adapter_types train`` trains, resumably, a DoRA
(``LoraConfig(use_dora=True)``) and an AdaLoRA (``AdaLoraConfig``, rank budget of
:func:`~hydralib.suite.training.adalora_schedule`) adapter for every task of
``preset.recipe_applications``, into ``<zoo>/adapters/dora/`` and
``<zoo>/adapters/adalora/``, with the LoRA zoo's data, steps, learning rate,
batch, seed and schedule. Only the adapter type differs.

``python -m hydralib.suite.adapter_types measure`` then measures, per type, on
the first ``n_eval`` test examples of each task (:mod:`.adapter_types_measure`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .adapter_types_measure import TRAIN_COMMAND, TYPES, train_types

__all__ = ["TRAIN_COMMAND", "TYPES", "train_types", "main"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hydralib.suite.adapter_types", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["train", "measure"])
    p.add_argument("--n-eval", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--claims", default=None, help=argparse.SUPPRESS)
    p.add_argument("--preset", default=None)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--worker", default=None, help="i/n: train every n-th job from i (run n of them in parallel)")
    args = p.parse_args(argv)
    worker = tuple(int(x) for x in args.worker.split("/")) if args.worker else None
    if worker or args.claims:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    kinds = tuple(args.types.split(","))
    if args.action == "train":
        train_types(args.preset, kinds, worker=worker)
        return 0
    from .adapter_types_measure import measure_rows, print_results, type_results

    if args.claims:
        measure_rows(args.preset, kinds, args.n_eval, claims=Path(args.claims), progress=False)
        return 0
    print_results(type_results(args.preset, kinds, args.n_eval, workers=args.workers, recompute=args.recompute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
