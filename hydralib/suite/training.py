"""Train LoRA, VeRA, DoRA and AdaLoRA adapters on suite tasks with stock peft, resumably.

One adapter = one task x one kind (``lora``, ``vera``, ``dora``, ``adalora``) x one seed. Each is
written atomically as a PEFT directory (half precision on disk) with a
``training.json`` record (configuration, seed, loss curve, seconds), so an
interrupted run keeps every finished adapter and :func:`train_zoo` picks up
the rest.

PEFT initialises ``lora_A`` from the global torch seed, so the seed is set
right before the adapter is created: adapters trained with the same seed start
from the same A, which is what the initialisation control needs.

Example
-------
>>> from hydralib.presets import get_preset
>>> from hydralib.suite.training import train_zoo
>>> train_zoo(get_preset("tiny"), "/tmp/zoo", kinds=("lora",))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_dir
from ..peft_io import CONFIG_NAME, WEIGHTS_NAME
from .evaluation import answer_logits, collate, compute_context
from .tasks import Example, encode_example, preset_task

RECORD_NAME = "training.json"


@dataclass(frozen=True)
class Recipe:
    """How a LoRA is optimised; every recipe uses the zoo's data, steps, rank, batch, seed and schedule.

    ``a_lr_divisor``: lora_A's learning rate is the zoo's divided by it (lora_B keeps the zoo's);
    ``freeze_a``: lora_A keeps its initial value. ``optimizer``: the peft helper that builds it.
    """

    name: str
    optimizer: str
    a_lr_divisor: float = 1.0
    freeze_a: bool = False
    paper: str = ""


RECIPES = {
    "standard": Recipe("standard", "torch.optim.AdamW"),
    "loraplus": Recipe("loraplus", "peft.optimizers.create_loraplus_optimizer", a_lr_divisor=16.0,
                       paper="LoRA+, Hayou et al. 2024, arXiv:2402.12354"),
    "loraplus4": Recipe("loraplus4", "peft.optimizers.create_loraplus_optimizer", a_lr_divisor=4.0,
                        paper="LoRA+, Hayou et al. 2024, arXiv:2402.12354"),
    "lorafa": Recipe("lorafa", "peft.optimizers.create_lorafa_optimizer", freeze_a=True,
                     paper="LoRA-FA, Zhang et al. 2023, arXiv:2308.03303"),
}


def make_optimizer(peft_model, recipe: str, learning_rate: float, config=None):
    """The optimiser of ``recipe`` (:data:`RECIPES`) for a LoRA ``peft_model``, built with peft's own helpers.

    ``standard``: AdamW on every trainable tensor at ``learning_rate``. ``loraplus`` /
    ``loraplus4``: :func:`peft.optimizers.create_loraplus_optimizer` with lora_A at
    ``learning_rate / ratio`` and lora_B at ``learning_rate``. ``lorafa``:
    :func:`peft.optimizers.create_lorafa_optimizer`, which sets ``requires_grad=False`` on every
    lora_A (so A stays bit-identical to its initial value) and projects lora_B's gradient
    with ``(A A^T)^-1`` (the LoRA-FA update); weight decay 0 everywhere, as the zoo.
    """
    if recipe not in RECIPES:
        raise ValueError(f"hydralib.suite.training: unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    spec = RECIPES[recipe]
    if spec.freeze_a:
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(peft_model, r=config.r, lora_alpha=config.lora_alpha, lr=learning_rate,
                                       weight_decay=0.0)
    if spec.a_lr_divisor != 1.0:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(peft_model, torch.optim.AdamW, lr=learning_rate / spec.a_lr_divisor,
                                         loraplus_lr_ratio=spec.a_lr_divisor, weight_decay=0.0)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)


@dataclass(frozen=True)
class AdapterJob:
    """One adapter to train: ``kind`` is ``"lora"`` or ``"vera"``; ``group`` names its folder under the zoo root;
    ``recipe`` a name in :data:`RECIPES` (LoRA only)."""

    task: str
    kind: str
    seed: int
    group: str
    recipe: str = "standard"

    def directory(self, root: Path) -> Path:
        return Path(root) / self.group / self.task


#: the kinds of adapter the zoo trains (``dora`` / ``adalora``: the other-adapter-type groups)
KINDS = ("lora", "vera", "dora", "adalora")


def adalora_schedule(preset, steps: int) -> dict:
    """AdaLoRA's rank budget for ``steps`` training steps: start at ``init_r = 1.5 r`` per module, end at an average
    of ``target_r = r`` (the LoRA zoo's rank, so the two store about the same numbers), with the peft phases at
    10 % warm-up (``tinit``), 30 % final fine-tuning (``tfinal``) and a reallocation every 2 steps (``deltaT``)."""
    r = preset.lora_rank
    return {"init_r": max(r + 1, (3 * r + 1) // 2), "target_r": r, "tinit": max(1, steps // 10),
            "tfinal": max(1, (3 * steps) // 10), "deltaT": 2, "total_step": steps, "orth_reg_weight": 0.5}


def peft_config(preset, kind: str, steps: int | None = None):
    """The peft config of a preset's adapters on ``preset.target_modules``.

    ``lora``: r, alpha; ``dora``: the same with ``use_dora=True`` (peft's DoRA: a magnitude vector per
    module next to the low-rank direction update); ``adalora``: :class:`peft.AdaLoraConfig` with
    :func:`adalora_schedule` (``steps`` is its ``total_step``); ``vera``: one shared PRNG key.
    """
    from peft import AdaLoraConfig, LoraConfig, VeraConfig

    if kind in ("lora", "dora"):
        return LoraConfig(r=preset.lora_rank, lora_alpha=preset.lora_alpha, target_modules=list(preset.target_modules),
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", use_dora=kind == "dora")
    if kind == "adalora":
        return AdaLoraConfig(lora_alpha=preset.lora_alpha, target_modules=list(preset.target_modules),
                             lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                             **adalora_schedule(preset, int(steps or preset.train_steps)))
    if kind == "vera":
        return VeraConfig(r=preset.vera_rank, target_modules=list(preset.target_modules),
                          projection_prng_key=preset.vera_prng_key, save_projection=False, vera_dropout=0.0,
                          task_type="CAUSAL_LM")
    raise ValueError(f"hydralib.suite.training: unknown adapter kind {kind!r} (one of {', '.join(KINDS)})")


def adalora_orthogonal_penalty(peft_model) -> torch.Tensor:
    """AdaLoRA's orthogonality regulariser, as :meth:`peft.tuners.adalora.AdaLoraModel.forward` adds it to a
    model-computed loss: the mean over the trainable ``lora_A (r, d_in)`` / ``lora_B (d_out, r)`` of
    ``||A A^T - I||_F`` / ``||B^T B - I||_F``. The zoo computes its loss on the answer tokens itself, so
    peft's forward never sees a loss to add it to; the training loop adds ``orth_reg_weight`` times this."""
    name = peft_model.base_model.trainable_adapter_name
    terms = []
    for n, p in peft_model.base_model.model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and name in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def recipe_jobs(preset, recipes: Sequence[str] = ("loraplus", "lorafa")) -> list[AdapterJob]:
    """The controlled sub-zoos: for each recipe other than ``standard``, a LoRA (seed ``preset.seed``) for every
    task of ``preset.recipe_applications``, in folder ``<recipe>/`` (``standard`` is the zoo's ``lora`` group)."""
    jobs = []
    for recipe in recipes:
        if recipe not in RECIPES:
            raise ValueError(f"hydralib.suite.training: unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
        if recipe == "standard":
            continue
        jobs += [AdapterJob(t, "lora", preset.seed, recipe, recipe) for t in preset.tasks
                 if t.rsplit("-", 1)[0] in preset.recipe_applications]
    return jobs


def type_jobs(preset, kinds: Sequence[str] = ("dora", "adalora")) -> list[AdapterJob]:
    """The other-adapter-type groups: for each kind, an adapter (seed ``preset.seed``) for every task of
    ``preset.recipe_applications`` (the recipe sub-zoos' tasks), in folder ``<kind>/``."""
    jobs = []
    for kind in kinds:
        if kind not in ("dora", "adalora"):
            raise ValueError(f"hydralib.suite.training: unknown adapter type {kind!r} (dora or adalora)")
        jobs += [AdapterJob(t, kind, preset.seed, kind) for t in preset.tasks
                 if t.rsplit("-", 1)[0] in preset.recipe_applications]
    return jobs


def zoo_jobs(preset, kinds: Sequence[str] = ("lora", "control", "vera")) -> list[AdapterJob]:
    """Every adapter of the zoo: LoRA and VeRA for every task (seed ``preset.seed``), and the seed-control set
    (LoRA for the tasks of the first two applications, each ``preset.control_seeds``)."""
    jobs = []
    for kind in kinds:
        if kind in ("lora", "vera"):
            jobs += [AdapterJob(t, kind, preset.seed, kind) for t in preset.tasks]
        elif kind == "control":
            control_apps = preset.applications[:2]
            for seed in preset.control_seeds:
                jobs += [AdapterJob(t, "lora", seed, f"lora-seed{seed}") for t in preset.tasks
                         if t.rsplit("-", 1)[0] in control_apps]
        else:
            raise ValueError(f"hydralib.suite.training: unknown kind {kind!r} (lora, vera, control)")
    return jobs


def is_complete(directory: Path) -> bool:
    """A finished adapter directory: config, weights and training record present."""
    return all((Path(directory) / name).is_file() for name in (CONFIG_NAME, WEIGHTS_NAME, RECORD_NAME))


def train_adapter(model, tokenizer, examples: Sequence[Example], config, *, steps: int, batch_size: int,
                  learning_rate: float, seed: int, progress: bool = True, desc: str = "train",
                  compute_dtype: str | None = None, recipe: str = "standard"):
    """Wrap ``model`` with ``config`` (seeded), train on answer tokens only, return (peft_model, losses).

    Batches are drawn with a generator seeded by ``seed``; the loss is the
    mean cross-entropy of the answer tokens (prompt tokens are not trained on).
    ``compute_dtype`` (e.g. ``"bfloat16"``) runs the forward pass under autocast;
    the adapter weights and the optimiser stay fp32.
    ``recipe``: the optimiser (:func:`make_optimizer`; LoRA only). An AdaLoRA ``config`` adds
    :func:`adalora_orthogonal_penalty` to the loss and calls peft's ``update_and_allocate(step)`` after
    every optimiser step (the rank budget; pruned triplets are masked in the saved state).
    The caller saves the adapter and calls ``peft_model.unload()``.
    """
    from peft import get_peft_model

    device = next(model.parameters()).device
    torch.manual_seed(seed)  # peft draws lora_A from the global generator
    peft_model = get_peft_model(model, config)
    peft_model.train()
    optimizer = make_optimizer(peft_model, recipe, learning_rate, config)
    warmup, total = max(1, steps // 10), max(1, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    encoded = [encode_example(e, tokenizer) for e in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator = torch.Generator().manual_seed(seed)
    losses = []
    adalora = str(getattr(config, "peft_type", "")).upper().endswith("ADALORA")
    for step in tqdm(range(steps), disable=not progress, desc=desc, leave=False):
        idx = torch.randint(len(encoded), (batch_size,), generator=generator).tolist()
        input_ids, attention_mask, target_mask, targets = collate([encoded[i] for i in idx], pad_id, device)
        with compute_context(device, compute_dtype):
            logits = answer_logits(peft_model.base_model.model, input_ids, attention_mask, target_mask)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        objective = loss + config.orth_reg_weight * adalora_orthogonal_penalty(peft_model) if adalora else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        if adalora:  # peft: after backward and the step, before the next zero_grad
            peft_model.base_model.update_and_allocate(step)
        schedule.step()
        losses.append(float(loss.detach()))
    peft_model.eval()
    return peft_model, losses


def recipe_record(recipe: str, learning_rate: float) -> dict:
    """What ``training.json`` records of a recipe: its settings and the learning rates of lora_A and lora_B."""
    spec = RECIPES[recipe]
    return {"name": spec.name, "optimizer": spec.optimizer, "freeze_a": spec.freeze_a,
            "a_lr_divisor": spec.a_lr_divisor, "lr_lora_A": 0.0 if spec.freeze_a else learning_rate / spec.a_lr_divisor,
            "lr_lora_B": learning_rate, "paper": spec.paper}


def _save(peft_model, directory: Path, record: dict, overwrite: bool) -> Path:
    """Save the adapter in half precision with its training record, atomically."""
    from safetensors.torch import load_file, save_file

    with atomic_dir(directory, overwrite=overwrite) as tmp:
        peft_model.save_pretrained(str(tmp))
        weights = tmp / WEIGHTS_NAME
        tensors = {k: v.to(torch.float16) for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(weights), metadata={"format": "pt"})
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def train_jobs(preset, root: str | Path, jobs: Sequence[AdapterJob], splits: Mapping | None = None,
               resume: bool = True, device=None, progress: bool = True, command: str = "",
               model_and_tokenizer=None) -> list[Path]:
    """Train the given jobs under ``root``, skipping complete ones (``resume``); return their directories.

    ``splits``: ``{task: TaskSplits}`` made beforehand (e.g. read from a JSON
    dump on a machine without the suite's data packages); made on demand otherwise.
    """
    from ..presets import get_device
    from .models import load_base_model

    root = Path(root)
    device = device or get_device()
    todo = [j for j in jobs if not (resume and is_complete(j.directory(root)))]
    if todo:
        model, tokenizer = model_and_tokenizer or load_base_model(preset, device=device)
        model.name_or_path = preset.base_model  # peft records it as base_model_name_or_path
        splits = dict(splits or {})
        for job in tqdm(todo, disable=not progress, desc=f"adapters ({len(jobs) - len(todo)} of {len(jobs)} done)"):
            if job.task not in splits:
                splits[job.task] = preset_task(preset, job.task)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps = preset.steps_for(job.group, job.task)
            config = peft_config(preset, job.kind, steps)
            lr = preset.vera_learning_rate if job.kind == "vera" else preset.learning_rate
            peft_model, losses = train_adapter(
                model, tokenizer, splits[job.task].train, config, steps=preset.steps_for(job.group, job.task),
                batch_size=preset.batch_size, learning_rate=lr, seed=job.seed,
                progress=progress, desc=f"{job.group}/{job.task}", compute_dtype=preset.compute_dtype,
                recipe=job.recipe)
            record = {"task": job.task, "kind": job.kind, "seed": job.seed, "group": job.group,
                      "preset": preset.name, "base_model": preset.base_model, "steps": preset.steps_for(job.group, job.task),
                      "batch_size": preset.batch_size, "learning_rate": lr, "compute_dtype": preset.compute_dtype,
                      "n_train": preset.n_train, "losses": losses,
                      **({"recipe": recipe_record(job.recipe, lr)} if job.kind == "lora" else {}),
                      **({"adalora": adalora_schedule(preset, steps)} if job.kind == "adalora" else {}),
                      "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu_start,
                      "device": str(device), "torch_threads": torch.get_num_threads(), "command": command}
            _save(peft_model, job.directory(root), record, overwrite=not resume)
            peft_model.unload()
    return [j.directory(Path(root)) for j in jobs]


def train_sub_zoo(preset, jobs: Sequence[AdapterJob], root: str | Path, worker: tuple[int, int] | None = None,
                  progress: bool = True, command: str = "") -> list[Path]:
    """Train the missing ``jobs`` of a sub-zoo under ``root`` (the zoo's ``adapters`` folder); ``worker=(i, n)``
    takes every n-th job from i, so that n processes share the work."""
    if worker is not None:
        jobs = list(jobs)[worker[0]::worker[1]]
    return train_jobs(preset, root, jobs, progress=progress, command=command)


def train_zoo(preset, root: str | Path, kinds: Sequence[str] = ("lora", "control", "vera"),
              tasks: Iterable[str] | None = None, resume: bool = True, device=None, progress: bool = True,
              command: str = "") -> list[Path]:
    """Train every missing adapter of the zoo under ``root``; finished ones are kept (``resume``).

    Returns the directories of every adapter of the requested jobs.
    """
    wanted = set(tasks) if tasks is not None else None
    jobs = [j for j in zoo_jobs(preset, kinds) if wanted is None or j.task in wanted]
    return train_jobs(preset, root, jobs, resume=resume, device=device, progress=progress, command=command)
