"""Other adapter types: the zoo's DoRA and AdaLoRA groups, trained, stored and kept in fewer bytes.

``python -m hydralib.suite.adapter_types train`` trains, resumably, a DoRA
(``LoraConfig(use_dora=True)``) and an AdaLoRA (``AdaLoraConfig``, rank budget of
:func:`~hydralib.suite.training.adalora_schedule`) adapter for every task of
``preset.recipe_applications``, into ``<zoo>/adapters/dora/`` and
``<zoo>/adapters/adalora/``, with the LoRA zoo's data, steps, learning rate,
batch, seed and schedule. Only the adapter type differs.

``python -m hydralib.suite.adapter_types measure`` then measures, per type, on
the first ``n_eval`` test examples of each task (:mod:`.adapter_types_measure`),
with the zoo's VeRA adapters of the same tasks beside them (:mod:`.adapter_types_vera`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .adapter_types_measure import MEASURED, TRAIN_COMMAND, TYPES, train_types

__all__ = ["MEASURED", "TRAIN_COMMAND", "TYPES", "train_types", "main"]


def main(argv=None) -> int:
    from .frontier import sub_zoo_args

    args, worker, kinds = sub_zoo_args("python -m hydralib.suite.adapter_types", __doc__.splitlines()[0], "types",
                                       MEASURED, argv)
    if args.action == "train":  # the zoo trains VeRA: left out of the default
        chosen = any(a.startswith("--types") for a in (sys.argv[1:] if argv is None else argv))
        try:
            train_types(args.preset, kinds if chosen else TYPES, worker=worker)
        except ValueError as err:  # a type this command does not train: one line, not a traceback
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    from .adapter_types_measure import measure_rows, print_results, type_results

    if args.claims:
        measure_rows(args.preset, kinds, args.n_eval, claims=Path(args.claims), progress=False)
        return 0
    print_results(type_results(args.preset, kinds, args.n_eval, workers=args.workers, recompute=args.recompute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
