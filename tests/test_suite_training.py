"""Training on the tiny preset: resumable, seeded, loadable by hydralib and peft, and it learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hydralib import load_adapters
from hydralib.presets import get_preset
from hydralib.suite.models import build_tiny_model
from hydralib.suite.tasks import make_task
from hydralib.suite.training import RECORD_NAME, is_complete, peft_config, train_adapter, train_zoo, zoo_jobs

ROOT = Path(__file__).resolve().parents[1]


def test_zoo_cli_restricted_to_some_tasks_evaluates_only_theirs():
    from hydralib.suite.zoo import _evaluation_units, _jobs

    preset = get_preset("default")
    task = "grammar_correction-ko"
    assert [(j.group, j.task) for j in _jobs(preset, ("lora", "control"), (task,))] == [
        ("lora", task), ("lora-seed1", task), ("lora-seed2", task)]
    assert _evaluation_units(preset, ("lora",), (task,)) == [("base", task), ("own", "lora", task), ("transfer", task)]
    assert len(_evaluation_units(preset, ("lora",))) == 3 * len(preset.tasks)


def test_zoo_jobs_cover_lora_vera_and_control():
    preset = get_preset("default")
    jobs = zoo_jobs(preset)
    assert sum(j.group == "lora" for j in jobs) == 40 and sum(j.group == "vera" for j in jobs) == 40
    control = [j for j in jobs if j.group.startswith("lora-seed")]
    assert len(control) == 2 * 8 * len(preset.control_seeds)
    assert {j.seed for j in control} == set(preset.control_seeds) and preset.seed not in preset.control_seeds


def test_steps_for_takes_the_job_override_and_the_default_elsewhere():
    preset = get_preset("default").with_overrides(
        train_steps_by_job=tuple(("lora", f"grammar_correction-{lang}", 240) for lang in ("de", "ko")))
    for g, t, n in preset.train_steps_by_job:
        assert preset.steps_for(g, t) == n != preset.train_steps
        assert preset.steps_for("lora-seed1", t) == preset.steps_for("vera", t) == preset.train_steps
    assert preset.steps_for("lora", "smart_reply-en") == preset.train_steps


def test_committed_adapters_record_the_steps_their_preset_gives_them():
    """``make zoo`` retrains every committed adapter with the steps it was trained with."""
    from hydralib.suite.artifacts import zoo_groups

    preset = get_preset("default")
    checked = 0
    for group in zoo_groups(preset):
        for record_file in sorted((ROOT / "data" / "adapters" / group).glob(f"*/{RECORD_NAME}")):
            record = json.loads(record_file.read_text())
            assert record["steps"] == preset.steps_for(group, record["task"]) == len(record["losses"]), record_file
            checked += 1
    if not checked:
        pytest.skip("no committed adapters")


@pytest.mark.timeout(600)
def test_train_zoo_tiny_is_resumable(tmp_path):
    tasks = get_preset("tiny").tasks
    preset = get_preset("tiny").with_overrides(train_steps=2, batch_size=2,
                                               train_steps_by_job=(("lora", tasks[1], 3),))
    dirs = train_zoo(preset, tmp_path, progress=False)
    assert len(dirs) == len(zoo_jobs(preset)) and all(is_complete(d) for d in dirs)
    record = json.loads((dirs[0] / RECORD_NAME).read_text())
    assert record["steps"] == 2 and len(record["losses"]) == 2 and record["seed"] == preset.seed
    steps = {(d.parent.name, d.name): json.loads((d / RECORD_NAME).read_text())["steps"] for d in dirs}
    assert steps.pop(("lora", tasks[1])) == 3 and set(steps.values()) == {2}
    stamps = {d: (d / "adapter_model.safetensors").stat().st_mtime_ns for d in dirs}
    victim = dirs[1]
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    train_zoo(preset, tmp_path, progress=False)  # only the missing adapter is trained again
    assert all((d / "adapter_model.safetensors").stat().st_mtime_ns == stamps[d] for d in dirs if d != victim)
    assert is_complete(victim)

    lora = load_adapters(str(tmp_path / "lora" / "*"))
    assert lora.tasks == sorted(preset.tasks) and lora.stored_dtypes[lora.tasks[0]] == torch.float16
    assert lora.base_model == preset.base_model
    model, _ = build_tiny_model(seed=preset.seed)
    vera = load_adapters(str(tmp_path / "vera" / "*"), base_model=model)
    assert vera.kind == "vera" and vera.rank(vera.tasks[0], vera.modules[0]) == preset.vera_rank
    control = load_adapters(str(tmp_path / f"lora-seed{preset.control_seeds[0]}" / "*"))
    assert set(control.tasks) == {t for t in preset.tasks if t.rsplit("-", 1)[0] in preset.applications[:2]}
    seeds = {json.loads((tmp_path / "lora-seed1" / t / RECORD_NAME).read_text())["seed"] for t in control.tasks}
    assert seeds == {preset.control_seeds[0]}


def test_training_lowers_the_loss_and_seed_fixes_init():
    preset = get_preset("tiny")
    model, tokenizer = build_tiny_model(seed=0)
    train = make_task("smart_reply-en", seed=0, n_train=4, n_validation=0, n_test=0).train
    peft_model, losses = train_adapter(model, tokenizer, train, peft_config(preset, "lora"), steps=15,
                                       batch_size=4, learning_rate=5e-2, seed=7, progress=False)
    # a random tiny model learns slowly; the real model's learning is measured by the zoo
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    peft_model.unload()
    inits = []
    for _ in range(2):
        peft_model, _ = train_adapter(model, tokenizer, train, peft_config(preset, "lora"), steps=0,
                                      batch_size=2, learning_rate=0.0, seed=11, progress=False)
        inits.append(peft_model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.clone())
        peft_model.unload()
    assert torch.equal(inits[0], inits[1])
