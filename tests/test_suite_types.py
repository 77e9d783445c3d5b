"""The zoo's DoRA and AdaLoRA groups: stock peft trains them, hydralib reads what peft saved.

Trained on the tiny preset's model (seconds); the invariants are those of each
adapter type: DoRA saves a magnitude vector per module next to its direction
factors, AdaLoRA prunes to its rank budget (``target_r`` per module on average)
and hydralib's factors of both give peft's own forward.
"""

from __future__ import annotations

import json

import pytest
import torch

from hydralib.presets import get_preset
from hydralib.suite import training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hydralib.suite.models import build_tiny_model

    preset = get_preset("tiny").with_overrides(train_steps=12)
    model, tokenizer = build_tiny_model(seed=0)
    model.name_or_path = "tiny"
    root = tmp_path_factory.mktemp("types")
    jobs = [j for j in training.type_jobs(preset) if j.task == preset.tasks[0]]
    dirs = training.train_jobs(preset, root, jobs, progress=False, model_and_tokenizer=(model, tokenizer))
    return preset, model, dict(zip([j.kind for j in jobs], dirs))


def test_type_jobs_cover_the_recipe_applications_in_their_own_folders():
    preset = get_preset("tiny")
    jobs = training.type_jobs(preset)
    tasks = [t for t in preset.tasks if t.rsplit("-", 1)[0] in preset.recipe_applications]
    assert [(j.kind, j.task) for j in jobs] == [("dora", t) for t in tasks] + [("adalora", t) for t in tasks]
    assert {j.group for j in jobs} == {"dora", "adalora"} and {j.seed for j in jobs} == {preset.seed}
    with pytest.raises(ValueError, match="unknown adapter type 'ia3'"):
        training.type_jobs(preset, ("ia3",))
    with pytest.raises(ValueError, match="unknown adapter kind 'ia3'"):
        training.peft_config(preset, "ia3")


def test_adalora_schedule_has_a_budgeting_phase_and_ends_at_the_lora_rank():
    for preset in (get_preset("tiny"), get_preset("default")):
        s = training.adalora_schedule(preset, preset.train_steps)
        assert s["target_r"] == preset.lora_rank < s["init_r"]
        assert s["tinit"] < s["total_step"] - s["tfinal"]  # peft refuses a schedule without one
        training.peft_config(preset, "adalora", preset.train_steps)  # peft's own checks pass


def test_dora_directory_holds_peft_dora_weights_and_its_record(trained):
    preset, _, dirs = trained
    d = dirs["dora"]
    config = json.loads((d / "adapter_config.json").read_text())
    record = json.loads((d / training.RECORD_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] is True
    assert record["kind"] == "dora" and record["steps"] == 12 and len(record["losses"]) == 12
    from safetensors import safe_open

    with safe_open(str(d / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    n_modules = sum(k.endswith("lora_A.weight") for k in keys)
    assert n_modules > 0 and sum("lora_magnitude_vector" in k for k in keys) == n_modules


def test_adalora_prunes_to_its_budget_and_records_its_schedule(trained):
    preset, _, dirs = trained
    d = dirs["adalora"]
    config = json.loads((d / "adapter_config.json").read_text())
    record = json.loads((d / training.RECORD_NAME).read_text())
    schedule = training.adalora_schedule(preset, 12)
    assert config["peft_type"] == "ADALORA" and record["adalora"] == schedule
    masks = config["rank_pattern"]
    assert masks and all(len(m) == schedule["init_r"] for m in masks.values())
    # peft's rank allocator keeps target_r triplets per module on average (ties of importance aside)
    kept = sum(sum(m) for m in masks.values())
    assert kept == pytest.approx(schedule["target_r"] * len(masks), abs=len(masks) // 4 + 1)
    assert kept < schedule["init_r"] * len(masks)


def test_hydralib_reads_the_trained_adalora_as_peft_runs_it(trained):
    """The factored LoRA of the kept rank gives peft's AdaLoRA forward (logits to 1e-5)."""
    from peft import PeftModel

    from hydralib import load_adapters
    from hydralib.suite.models import build_tiny_model

    preset, _, dirs = trained
    aset = load_adapters([dirs["adalora"]])
    task = aset.tasks[0]
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    base, _ = build_tiny_model(seed=0)
    peft_model = PeftModel.from_pretrained(base, str(dirs["adalora"])).eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    ours, _ = build_tiny_model(seed=0)
    weights = dict(ours.named_modules())
    with torch.no_grad():
        for m in aset.modules:
            A, B, s = aset.factors(task, m)
            weights[m].weight += s * B @ A
        got = ours(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_applied_runs_a_trained_dora_as_peft_does_and_restores_the_weights(trained):
    """hydralib.runtime.applied with a DoRA set (magnitudes) gives peft's DoRA forward (logits to 1e-5)."""
    from peft import PeftModel

    from hydralib import load_adapters
    from hydralib.runtime import applied
    from hydralib.suite.models import build_tiny_model

    _, _, dirs = trained
    aset = load_adapters([dirs["dora"]])
    assert aset.adapter_type == "dora" and aset.magnitudes
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    base, _ = build_tiny_model(seed=0)
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, str(dirs["dora"])).eval()(input_ids=ids).logits
    ours, _ = build_tiny_model(seed=0)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.no_grad():
        plain = ours(input_ids=ids).logits
        with applied(ours, aset, aset.tasks[0]):
            got = ours(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


@pytest.fixture(scope="module")
def tiny_types(tmp_path_factory):
    import os

    os.environ["HYDRALIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from hydralib.suite import adapter_types_measure as atm

    preset = get_preset("tiny")
    yield preset, atm.type_results(preset, n_eval=4, progress=False)
    os.environ.pop("HYDRALIB_CACHE")


def test_type_results_measure_every_point_of_both_types(tiny_types):
    from hydralib.suite.adapter_types_measure import type_points

    preset, result = tiny_types
    r = preset.lora_rank
    for kind in ("dora", "adalora"):
        t = result["types"][kind]
        names = [p["name"] for p in t["points"]]
        assert names == [n for n, _ in type_points(preset, kind)]
        assert set(t["stats"]["methods"]) == set(names) and t["structure"]["file_bytes"] > 0
        rows = {p["name"]: p for p in t["points"]}
        assert rows["individual"]["relative_loss"] < 1e-6  # the stored fp16 factors, re-encoded in fp16
        assert rows["int8"]["relative_loss"] < rows["int4"]["relative_loss"]
        assert rows["int4"]["relative_bytes"] < rows["int8"]["relative_bytes"] < rows["individual"]["relative_bytes"]
        half = rows.get(f"hydraopt-task-r{r // 2}", rows.get(f"hydraopt-task-r{r}+int4"))  # DoRA / AdaLoRA grids
        assert rows[f"hydraopt-task-r{r}"]["relative_loss"] <= half["relative_loss"] + 1e-9
        assert rows[f"hydraopt-task-r{r}-sideB"]["params"]["side"] == "B"
        assert all(len(s["hits"]) == 4 for p in t["points"] for s in p["scores"].values())
        assert {p["loss_space"] for p in t["points"]} == ({"W"} if kind == "dora" else {"dW"})
    dora = {p["name"]: p for p in result["types"]["dora"]["points"]}
    losses = dora[f"hydraopt-task-r{r}"]["magnitude_losses"]
    assert losses["lstsq"] <= min(losses["kept"], losses["refit"]) + 1e-12  # the least-squares fit is never worse


def test_vera_is_measured_beside_them_on_the_same_tasks_and_examples(tiny_types):
    """The zoo's VeRA adapters of the same tasks: every VeRA point, bytes of the stored numbers against the adapters'
    own, dW losses that follow the heads, and the side comparison that the report reads."""
    from hydralib.storage import set_params
    from hydralib.suite import types_report
    from hydralib.suite.adapter_types_measure import type_adapters, type_points

    preset, result = tiny_types
    assert list(result["types"]) == ["vera", "dora", "adalora"]
    t = result["types"]["vera"]
    rows = {p["name"]: p for p in t["points"]}
    assert list(rows) == [n for n, _ in type_points(preset, "vera")]
    assert list(rows["individual"]["scores"]) == list(result["types"]["dora"]["points"][0]["scores"])
    assert {len(s["hits"]) for p in t["points"] for s in p["scores"].values()} == {4}
    vera = type_adapters(preset, "vera")
    assert vera.kind == "vera" and rows["individual"]["bytes"] == 2 * set_params(vera)
    assert rows["individual"]["relative_bytes"] == 1.0 and rows["individual"]["relative_loss"] == 0.0
    assert 0 < rows["int8"]["relative_loss"] < rows["int4"]["relative_loss"]
    assert rows["int4"]["relative_bytes"] < rows["int8"]["relative_bytes"] < 1  # codes and one fp16 scale per vector
    n = len(vera.tasks)
    assert rows["task_arithmetic"]["relative_bytes"] == pytest.approx(1 / n)  # one set of vectors for every task
    assert rows["hydraopt-1-d"]["relative_loss"] >= rows["hydraopt-task-d"]["relative_loss"] - 1e-9
    assert 0 < rows["task_arithmetic"]["relative_loss"]
    assert rows["hydraopt-task-d"]["heads_k"] == rows["hydraopt-task-b"]["heads_k"] == n
    assert -1 <= t["structure"]["cos_b"] <= 1 and t["structure"]["d_initial"] > 0
    side = types_report.side_verdicts(result, preset.lora_rank)["vera"]
    assert (side["point_a"], side["point_b"]) == ("hydraopt-task-d", "hydraopt-task-b")
    assert side["similar_a"] == t["structure"]["cos_d_moved"]
    with pytest.raises(ValueError, match="VeRA adapters are trained with the zoo"):
        from hydralib.suite.adapter_types_measure import train_types

        train_types(preset, ("vera",))
    from hydralib.suite.adapter_types import main

    assert main(["train", "--preset", "tiny", "--types", "vera"]) == 2


def test_type_results_are_read_back_by_hash_without_measuring(tiny_types, monkeypatch):
    from hydralib.suite import adapter_types_measure as atm

    preset, result = tiny_types
    monkeypatch.setattr(atm, "measure_rows", lambda *a, **k: pytest.fail("measured again"))
    assert atm.type_results(preset, n_eval=4, progress=False) == json.loads(json.dumps(result))
    assert atm.type_results(preset, n_eval=3, stored_only=True) is None  # another n_eval: not stored


def test_rows_of_the_stored_result_are_reused_without_the_row_cache(tiny_types, monkeypatch):
    """A fresh checkout has the committed result but not the (git-ignored) row cache: its rows are reused by key."""
    import shutil

    from hydralib.suite import adapter_types_measure as atm
    from hydralib.suite.artifacts import results_path

    preset, result = tiny_types
    shutil.rmtree(results_path(preset, "adapter-types-rows").with_suffix(""))
    monkeypatch.setattr("hydralib.suite.models.load_base_model", lambda *a, **k: pytest.fail("measured again"))
    rows = atm.measure_rows(preset, ("dora",), n_eval=4, progress=False)
    assert [r["name"] for r in rows] == ["structure"] + [p["name"] for p in result["types"]["dora"]["points"]]


def test_the_report_on_the_committed_results_states_what_the_statistics_say():
    """The summary table and findings of the committed default result: one row per type (LoRA first), the side
    verdict is the paired bootstrap's, and the fewest-bytes cell is the cheapest point whose interval clears 0.98."""
    from hydralib.presets import get_preset
    from hydralib.stats import compare_rows
    from hydralib.suite import recipes
    from hydralib.suite import types_report as report
    from hydralib.suite.adapter_types_measure import type_results

    preset = get_preset("default")
    result = type_results(preset, stored_only=True)
    assert result is not None, "the committed results/adapter_types.json does not match the code and adapters"
    lora = recipes.recipe_results(preset, recipes.BOOK_RECIPES, progress=False, stored_only=True)
    file_mb = {"lora": 1.0, **{k: e["structure"]["file_bytes"] / 1e6 for k, e in result["types"].items()}}
    rows, header = report.summary_table(result, lora, preset.lora_rank, file_mb)
    assert [r[0] for r in rows] == ["LoRA", "VeRA", "DoRA", "AdaLoRA"] and len(header) == len(rows[0])
    for row, (kind, e) in zip(rows[1:], result["types"].items()):
        pts = {p["name"]: p for p in e["points"]}
        a, b = report.side_pair(kind, preset.lora_rank)
        verdict = compare_rows(pts[a], pts[b], pts["individual"])["verdict"]
        name_a, name_b = report.SIDE_NAMES.get(kind, ("A", "B"))
        assert row[4].endswith({"better": f"{name_a} wins", "worse": f"{name_b} wins"}.get(verdict, "within noise"))
        clear = [(p["relative_bytes"], n) for n, p in pts.items() if n != "individual"
                 and e["stats"]["methods"][n]["ci"][0] >= report.TARGET]
        assert row[5] == "none" if not clear else row[5].startswith(f"`{min(clear)[1]}`")
    text = "\n".join(report.finding_lines(result, lora, preset.lora_rank, file_mb))
    assert text.count("which side to share") == 3 and "Fewest bytes that keep 0.98" in text
