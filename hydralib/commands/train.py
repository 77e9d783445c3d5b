"""`hydralib train`: train the adapter zoo of a preset, resumably.

``--recipe standard`` (the default) trains the zoo's groups (``--kinds``); ``--recipe loraplus`` /
``lorafa`` / ``loraplus4`` trains that recipe's controlled sub-zoo (every task of the preset's
``recipe_applications``) into ``<out>/<recipe>/`` with peft's LoRA+ or LoRA-FA optimiser and otherwise the
zoo's settings (:data:`hydralib.suite.training.RECIPES`).
"""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="tiny, default or paper (default: $HYDRALIB_PRESET or 'default')")
    p.add_argument("--out", default="data/adapters", help="zoo root; one folder per group (lora, vera, lora-seedN)")
    p.add_argument("--kinds", nargs="+", default=["lora", "vera", "control"], choices=["lora", "vera", "control"])
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: every task of the preset)")
    p.add_argument("--recipe", default="standard", choices=["standard", "loraplus", "loraplus4", "lorafa"],
                   help="optimiser recipe: standard (AdamW, the zoo), loraplus (lora_A's rate / 16), loraplus4 "
                        "(/ 4) or lorafa (lora_A frozen); non-standard recipes train their sub-zoo into OUT/RECIPE")
    p.add_argument("--overwrite", action="store_true", help="retrain adapters that are already complete")


def run(args) -> int:
    from ..presets import get_preset
    from ..suite.training import train_zoo

    preset = get_preset(args.preset)
    command = "hydralib train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else "hydralib train"
    if args.recipe != "standard":
        from ..suite.training import recipe_jobs, train_jobs

        jobs = [j for j in recipe_jobs(preset, (args.recipe,)) if args.tasks is None or j.task in args.tasks]
        dirs = train_jobs(preset, args.out, jobs, resume=not args.overwrite, command=command)
        print(f"{len(dirs)} {args.recipe} adapters complete under {args.out}/{args.recipe}")
        return EXIT_OK
    dirs = train_zoo(preset, args.out, kinds=args.kinds, tasks=args.tasks, resume=not args.overwrite,
                     command=command)
    print(f"{len(dirs)} adapters complete under {args.out}")
    return EXIT_OK
