"""Training recipes (standard, LoRA+, LoRA-FA): each optimiser moves what it should, records, and sharing A.

Stock peft builds the optimisers; these tests check what they do to a tiny Llama's LoRA.
"""

from __future__ import annotations

import json

import pytest
import torch

from hydralib.presets import get_preset
from hydralib.suite import training


def _peft_model(seed=0):
    from peft import LoraConfig, get_peft_model

    from conftest import tiny_llama

    base = tiny_llama(seed=1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    torch.manual_seed(seed)
    return get_peft_model(base, config), config


def _step(model, optimizer, steps=3):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=g)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _params(model, key):
    return {n: p.detach().clone() for n, p in model.named_parameters() if key in n}


@pytest.mark.parametrize("recipe", ["standard", "loraplus", "lorafa"])
def test_each_recipe_updates_exactly_the_parameters_it_should(recipe):
    model, config = _peft_model()
    before_a, before_b = _params(model, "lora_A"), _params(model, "lora_B")
    others = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    optimizer = training.make_optimizer(model, recipe, 1e-2, config)
    _step(model, optimizer)
    after_a, after_b = _params(model, "lora_A"), _params(model, "lora_B")
    assert all(not torch.equal(before_b[n], after_b[n]) for n in before_b)  # B always learns
    moved_a = [float((after_a[n] - before_a[n]).norm() / before_a[n].norm()) for n in before_a]
    if recipe == "lorafa":
        assert all(torch.equal(before_a[n], after_a[n]) for n in before_a)  # bit-identical
    else:
        assert all(m > 0 for m in moved_a)
    assert all(torch.equal(p, dict(model.named_parameters())[n].detach()) for n, p in others.items())


def test_loraplus_gives_lora_a_the_divided_learning_rate():
    model, config = _peft_model()
    optimizer = training.make_optimizer(model, "loraplus", 1.6e-2, config)
    rates = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    a = {lr for n, lr in rates.items() if "lora_A" in n}
    b = {lr for n, lr in rates.items() if "lora_B" in n}
    assert len(a) == len(b) == 1 and a.pop() == pytest.approx(1e-3) and b.pop() == pytest.approx(1.6e-2)


def test_unknown_recipes_are_refused():
    model, config = _peft_model()
    with pytest.raises(ValueError, match="unknown recipe"):
        training.make_optimizer(model, "sgd", 1e-2, config)
    with pytest.raises(ValueError, match="unknown recipe"):
        training.recipe_jobs(get_preset("tiny"), ("sgd",))


def test_recipe_jobs_cover_the_recipe_applications_in_their_own_folders():
    preset = get_preset("default")
    jobs = training.recipe_jobs(preset)
    assert {j.group for j in jobs} == {"loraplus", "lorafa"} and all(j.recipe == j.group for j in jobs)
    assert len(jobs) == 2 * len(preset.recipe_applications) * len(preset.languages)
    assert training.recipe_jobs(preset, ("standard",)) == []


def test_committed_recipe_adapters_record_the_recipe_and_steps_their_preset_gives():
    from hydralib.suite.artifacts import zoo_dir
    from hydralib.suite.training import RECORD_NAME, is_complete

    preset = get_preset("default")
    root = zoo_dir(preset) / "adapters"
    checked = 0
    for job in training.recipe_jobs(preset, ("loraplus", "lorafa", "loraplus4")):
        d = job.directory(root)
        if not is_complete(d):
            continue
        record = json.loads((d / RECORD_NAME).read_text())
        assert record["recipe"] == training.recipe_record(job.recipe, preset.learning_rate)
        assert record["steps"] == preset.steps_for(job.group, job.task) == len(record["losses"])
        assert (record["seed"], record["batch_size"], record["learning_rate"]) == (
            preset.seed, preset.batch_size, preset.learning_rate)
        checked += 1
    if checked == 0:
        pytest.skip("no recipe adapters committed")


def test_lorafa_adapters_of_one_seed_share_a_exactly_and_hydraopt_reconstructs_them(tmp_path):
    """LoRA-FA keeps every lora_A at the seed's initial value, so one A' and K = N heads at r' = r are exact."""
    from hydralib import load_adapters
    from hydralib.merge import hydraopt
    from hydralib.suite.models import build_tiny_model
    from hydralib.suite.tasks import make_task

    preset = get_preset("tiny")
    model, tokenizer = build_tiny_model(seed=0)
    model.name_or_path = "tiny"
    dirs = []
    for i, task in enumerate(preset.tasks[:3]):
        examples = make_task(task, n_train=16, n_validation=2, n_test=2).train
        peft_model, _ = training.train_adapter(model, tokenizer, examples, training.peft_config(preset, "lora"),
                                               steps=3, batch_size=4, learning_rate=5e-2, seed=0, progress=False,
                                               recipe="lorafa")
        peft_model.save_pretrained(str(tmp_path / task))
        peft_model.unload()
        dirs.append(tmp_path / task)
    aset = load_adapters(dirs)
    result = hydraopt(aset, heads="task", rank=preset.lora_rank, progress=False)
    worst = 0.0
    for t in aset.tasks:
        for m in aset.modules:
            A, B, s = aset.factors(t, m)
            a, b, _ = result.factors(t, m)
            dw = s * B.double() @ A.double()
            worst = max(worst, float((b.double() @ a.double() - dw).norm() / dw.norm().clamp_min(1e-30)))
    assert worst < 1e-6


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory):
    import os

    os.environ["HYDRALIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from hydralib.suite import recipes

    preset = get_preset("tiny")
    recipes.train_recipes(preset, ("lorafa",), progress=False)
    yield preset, recipes.recipe_results(preset, ("standard", "lorafa"), n_eval=4, progress=False)
    os.environ.pop("HYDRALIB_CACHE")


def test_lorafa_drift_is_zero_and_its_a_side_is_shared_exactly(tiny_recipes):
    _, result = tiny_recipes
    fa, std = result["recipes"]["lorafa"], result["recipes"]["standard"]
    assert fa["structure"]["drift_max"] == 0.0 and std["structure"]["drift_mean"] > 0
    assert fa["structure"]["overlap_a"] == pytest.approx(1.0, abs=1e-9)
    full = next(p for p in fa["points"] if p["name"].startswith("hydraopt-task-r") and
                p["params"]["rank"] == get_preset("tiny").lora_rank)
    assert full["relative_loss"] < 1e-6  # one A' and a head per task reproduce every LoRA-FA adapter
    assert fa["recipe"]["freeze_a"] and fa["recipe"]["lr_lora_A"] == 0.0
    assert set(fa["stats"]["methods"]) == {p["name"] for p in fa["points"]}


def test_recipe_results_are_reused_by_hash(tiny_recipes, monkeypatch):
    from hydralib.suite import recipes

    preset, result = tiny_recipes
    monkeypatch.setattr(recipes, "_point_row", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert recipes.recipe_results(preset, ("standard", "lorafa"), n_eval=4, stored_only=True)["hash"] == result["hash"]
    assert recipes.recipe_results(preset, ("standard", "lorafa"), n_eval=3, stored_only=True) is None


def _synthetic_recipes(keep_fa=0.99):
    """A recipes result with known hits: standard's shared-A setting loses, LoRA-FA's keeps ``keep_fa``."""
    import numpy as np

    from hydralib.stats import summarise

    rng = np.random.default_rng(0)
    ref = {f"t{i}": rng.random(100) < 0.9 for i in range(4)}

    def row(name, keep, size, params=None, base=ref):
        hits = {t: h & (rng.random(100) < keep) for t, h in base.items()}
        return {"name": name, "params": params or {}, "relative_bytes": size, "relative_loss": 1 - keep,
                "scores": {t: {"hits": "".join("1" if x else "0" for x in h), "graded": 0.5} for t, h in hits.items()}}

    out = {"recipes": {}}
    for recipe, keep, drift in (("standard", 0.7, 0.99), ("lorafa", keep_fa, 0.0)):
        own = row("individual", 1.0, 1.0)
        own_hits = {t: np.frombuffer(v["hits"].encode(), np.uint8) == ord("1") for t, v in own["scores"].items()}
        pts = [own, row("hydraopt-task-r8", keep, 0.5, {"heads": "task", "rank": 8}, own_hits),
               row("int4", 1.0, 0.25, {"codec": "int4"}, own_hits)]
        out["recipes"][recipe] = {"structure": {"drift_mean": drift, "drift_min": drift, "drift_max": drift,
                                                "overlap_a": 1 - drift, "overlap_b": 0.05},
                                  "points": pts, "stats": summarise(pts, B=300), "recipe": {}, "training_seconds": 1}
    return out


def test_verdicts_name_the_recipe_that_reaches_the_papers_regime():
    from hydralib.suite import recipes_report as report

    v = report.verdicts(_synthetic_recipes())
    assert [(p["recipe"], p["name"]) for p in v["reach"]] == [("lorafa", "hydraopt-task-r8")]
    assert v["drift"]["lorafa"] == 0.0 and v["own"]["lorafa"]["versus_reference"] is not None
    text = " ".join(report.finding_lines(_synthetic_recipes()))
    assert "is reached** by `lorafa` / `hydraopt-task-r8`" in text
    assert "moved at most 0.000 of its initial norm reach it; those that moved 0.990 or more do not" in text
    assert "train with `lorafa`" in report.advice(_synthetic_recipes())
    assert "not reached" in " ".join(report.finding_lines(_synthetic_recipes(keep_fa=0.6)))


def test_hydralib_train_recipe_trains_the_sub_zoo_with_that_optimiser(tmp_path):
    from hydralib.cli import main

    assert main(["train", "--preset", "tiny", "--out", str(tmp_path), "--recipe", "lorafa",
                 "--tasks", get_preset("tiny").tasks[0]]) == 0
    record = json.loads((tmp_path / "lorafa" / get_preset("tiny").tasks[0] / "training.json").read_text())
    assert record["recipe"]["name"] == "lorafa" and record["recipe"]["freeze_a"] is True
    assert record["group"] == "lorafa"


def test_drift_sentence_brackets_the_recipes_and_says_when_drift_does_not_order_them():
    from hydralib.suite import recipes_report as report

    v = {"reach": [{"recipe": "a"}, {"recipe": "b"}], "drift": {"a": 0.0, "b": 0.2, "c": 0.6, "d": 0.9}}
    assert report.drift_bracket(v) == {"reach_max": 0.2, "fail_min": 0.6, "ordered": True}
    assert "moved at most 0.200 of its initial norm reach it; those that moved 0.600 or more do not" in \
        report.drift_sentence(v)
    v["reach"] = [{"recipe": "a"}, {"recipe": "d"}]
    assert report.drift_bracket(v)["ordered"] is False
    assert "does not separate" in report.drift_sentence(v)
    v["reach"] = []
    assert "no recipe measured reaches it" in report.drift_sentence(v)


def test_drift_figure_draws_one_line_per_setting_and_the_recipe_table_one_row_per_recipe():
    import matplotlib.pyplot as plt

    from hydralib.suite import recipes_report as report

    result = _synthetic_recipes()
    fig = report.drift_figure(result)
    left, right = fig.axes
    assert [line.get_label() for line in left.get_lines()] == ["hydraopt-task-r8", "int4"]
    assert list(left.get_lines()[0].get_xdata()) == [0.0, 0.99]  # sorted by drift: lorafa, standard
    plt.close(fig)
    rows = report.recipe_table(result, 5e-3)
    assert [r[0] for r in rows] == ["standard", "lorafa"] and rows[0][1] == "0.005" and len(rows[0]) == 5
