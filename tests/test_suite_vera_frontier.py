"""The VeRA frontier: a tiny end-to-end run through the LoRA frontier's harness, storage in bytes, the row cache,
the input hash, and the chapter's verdict helpers.

The tiny preset's base model is random (every exact match is 0), so the
end-to-end run checks what holds whatever the scores; the relative
performance of the individual adapters is checked with a stand-in scorer
that gives every task a positive score.
"""

from __future__ import annotations

import doctest
import json
import math
import shutil

import pytest
import torch

from hydralib.suite import frontier as fr
from hydralib.suite import vera_frontier as vf

from conftest import edit_config, edit_tensors

N_EVAL, N_TUNE = 3, 2
EXPECTED_NAMES = ["individual", "task_arithmetic", "ties", "dare_linear", "dare_ties", "dense_task_arithmetic"] + [
    f"vera-hydraopt-{side}-{heads}" for side in ("d", "b") for heads in (1, "application", "language", "task")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset with a LoRA + VeRA zoo trained into a scratch cache, and its VeRA frontier."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HYDRALIB_CACHE", str(tmp_path_factory.mktemp("cache")))
    from hydralib.presets import get_preset
    from hydralib.suite.artifacts import ensure_zoo

    preset = get_preset("tiny")
    ensure_zoo(preset, kinds=("lora", "vera"))
    result = vf.vera_frontier_results(preset, n_eval=N_EVAL, n_tune=N_TUNE, progress=False)
    yield preset, result
    mp.undo()


def test_doctest_example():
    result = doctest.testmod(vf)
    assert result.attempted > 0 and result.failed == 0


def test_rows_have_the_expected_names_and_families(tiny):
    preset, result = tiny
    assert [r["name"] for r in result["rows"]] == EXPECTED_NAMES
    assert [s.name for s in vf.default_vera_methods(preset)] == EXPECTED_NAMES
    families = {r["name"]: r["family"] for r in result["rows"]}
    assert families["ties"] == "vectors" and families["dense_task_arithmetic"] == "dense"
    assert result["kind"] == "vera" and result["n_eval"] == N_EVAL and len(result["tasks"]) == len(preset.tasks)
    for r in result["rows"]:
        assert set(r["scores"]) == set(preset.tasks) and all(0.0 <= v <= 1.0 for v in r["scores"].values())
        tuned = set(next(s for s in vf.default_vera_methods(preset) if s.name == r["name"]).tune)
        assert set(r["tuned"]) == tuned and all(t["values"]["lam"] > 0 for t in r["trials"])
    hydra = [r for r in result["rows"] if r["family"] == "vera_hydraopt"]
    assert all(r["floor"] <= r["loss"] * (1 + 1e-9) + 1e-12 and r["loss"] <= r["energy"] * (1 + 1e-9) for r in hydra)


def test_storage_in_bytes_by_hand(tiny):
    preset, result = tiny
    rows = {r["name"]: r for r in result["rows"]}
    # tiny: 2 layers; q_proj and o_proj have d_out = 64, k_proj and v_proj d_out = 32; VeRA rank r = 16, N = 4 tasks.
    # One VeRA adapter per layer: (64 + 16) + (32 + 16) + (32 + 16) + (64 + 16) = 256 numbers, 512 for 2 layers.
    assert (preset.vera_rank, len(preset.tasks)) == (16, 4)
    assert rows["individual"]["stored"] == 4 * 512 and rows["individual"]["bytes_fp16"] == 4096
    assert rows["ties"]["bytes_fp16"] == 2 * 512
    # shared lambda_d (r) once and one lambda_b head (d_out) per application (K = 2), per module:
    # per layer (16 + 2*64) + (16 + 2*32) + (16 + 2*32) + (16 + 2*64) = 448, 896 numbers for 2 layers.
    row = rows["vera-hydraopt-d-application"]
    assert row["heads"] == 2 and row["stored"] == 896 and row["bytes_fp16"] == 1792
    assert row["relative_storage"] == pytest.approx(896 / 2048)
    # the mirror: lambda_b (d_out) shared, one lambda_d head (r) per language (K = 2): 4 * 32 + 192 per layer
    assert rows["vera-hydraopt-b-language"]["stored"] == 2 * (64 + 32 + 32 + 64 + 4 * 2 * 16)
    # the dW reference is a LoRA of rank 16: 16 * (d_in + d_out) per module, d_in = 64
    assert rows["dense_task_arithmetic"]["stored"] == 2 * 16 * (128 + 96 + 96 + 128)
    # LoRA zoo: rank 4, 4 * (64 + 64) + 4 * (64 + 32) per q/o and k/v module
    assert result["lora_stored"] == 4 * 2 * 4 * (128 + 96 + 96 + 128) and result["lora_bytes_fp16"] == 28672
    assert result["vera_bytes_fp16"] == 4096 and all(r["bytes_fp16"] == 2 * r["stored"] for r in result["rows"])
    assert rows["individual"]["relative_to_lora"] == pytest.approx(4096 / 28672)


def test_merging_is_deterministic(tiny):
    preset, _ = tiny
    aset = vf.load_vera_zoo(preset)
    specs = {s.name: s for s in vf.default_vera_methods(preset)}
    for name, values in (("dare_ties", {"lam": 1.0, "density": 0.5}), ("vera-hydraopt-b-application", {})):
        first, _, stored1, _ = vf.build_vera_method(specs[name], aset, values)
        again, _, stored2, _ = vf.build_vera_method(specs[name], aset, values)
        assert stored1 == stored2
        for t in first.tasks:
            for m in first.modules:
                for x, y in zip(first.vera_vectors(t, m), again.vera_vectors(t, m)):
                    assert torch.equal(x, y)


def test_individual_relative_performance_is_one(tiny, monkeypatch):
    """A stand-in scorer (1 / (1 + relative dW error against the task's own adapter), on the first module) gives
    every task a positive own score; the real harness then reports relative 1 for the individual adapters."""
    preset, _ = tiny
    aset = vf.load_vera_zoo(preset)
    module = aset.modules[0]

    def proxy(model, tokenizer, examples, eval_set, mapping, compute_dtype=None):
        out = {}
        for t in examples:
            own = aset.delta(t, module)
            err = float((eval_set.delta(mapping.get(t, t), module) - own).norm() / own.norm())
            out[t] = 1.0 / (1.0 + err)
        return out

    monkeypatch.setattr(vf, "score", proxy)
    specs = [s for s in vf.default_vera_methods(preset) if s.name in ("individual", "task_arithmetic",
                                                                       "vera-hydraopt-d-task")]
    result = vf.run_vera_frontier(preset, specs, n_eval=1, n_tune=1, progress=False)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["individual"]["relative"] == pytest.approx(1.0) and rows["individual"]["left_out"] == 0
    assert all(v == pytest.approx(1.0) for v in rows["individual"]["scores"].values())
    assert rows["task_arithmetic"]["relative"] < 1.0
    assert rows["vera-hydraopt-d-task"]["relative"] <= 1.0 + 1e-12


def test_stored_results_and_rows_are_reused(tiny, monkeypatch):
    preset, result = tiny
    from hydralib.suite import artifacts

    assert artifacts.results_path(preset, "vera-frontier").is_file()
    again = vf.vera_frontier_results(preset, n_eval=N_EVAL, n_tune=N_TUNE, stored_only=True)
    assert json.dumps(again, sort_keys=True) == json.dumps(result, sort_keys=True)  # NaN-safe comparison
    assert vf.vera_frontier_results(preset, n_eval=N_EVAL + 1, n_tune=N_TUNE, stored_only=True) is None
    # every row is cached: a new run on the same inputs neither loads the model nor scores anything
    monkeypatch.setattr(vf, "score", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    rerun = vf.run_vera_frontier(preset, n_eval=N_EVAL, n_tune=N_TUNE, progress=False)
    assert json.dumps(rerun["rows"], sort_keys=True) == json.dumps(result["rows"], sort_keys=True)


def test_the_hash_changes_when_an_adapter_file_changes(tiny, tmp_path):
    preset, _ = tiny
    from hydralib.suite.artifacts import zoo_dir

    root = tmp_path / "vera"
    shutil.copytree(zoo_dir(preset) / "adapters" / "vera", root)
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    specs = vf.default_vera_methods(preset)
    before = vf.vera_inputs_hash(dirs, specs, N_EVAL, N_TUNE, preset.name)
    assert vf.vera_inputs_hash(dirs, specs, N_EVAL, N_TUNE, preset.name) == before
    assert vf.vera_inputs_hash(dirs, specs, N_EVAL + 1, N_TUNE, preset.name) != before
    assert vf.vera_inputs_hash(dirs, specs[:3], N_EVAL, N_TUNE, preset.name) != before
    # the LoRA frontier's hash of the same inputs is a different key
    assert fr.inputs_hash(dirs, specs, N_EVAL, N_TUNE, preset.name) != before

    def bump(tensors):
        key = next(k for k in sorted(tensors) if "lambda_b" in k)
        tensors[key] = tensors[key] + 1

    edit_tensors(dirs[0], bump)
    weights_changed = vf.vera_inputs_hash(dirs, specs, N_EVAL, N_TUNE, preset.name)
    assert weights_changed != before
    edit_config(dirs[1], projection_prng_key=7)  # other projections, same weights
    assert vf.vera_inputs_hash(dirs, specs, N_EVAL, N_TUNE, preset.name) != weights_changed


def test_no_vera_adapters_is_a_clear_error(tmp_path, monkeypatch):
    from hydralib.errors import HydraError
    from hydralib.presets import get_preset

    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path))
    monkeypatch.setattr("hydralib.suite.artifacts.ensure_zoo", lambda *a, **k: tmp_path)
    preset = get_preset("tiny")
    assert vf.vera_frontier_results(preset, stored_only=True) is None
    with pytest.raises(HydraError, match="no VeRA adapters"):
        vf.vera_frontier_results(preset)
    assert vf.main(["--preset", "tiny"]) == 1


def _row(name, family, storage, value, **extra):
    return {"name": name, "family": family, "relative_storage": storage, "relative": value, "exact_match": value,
            **extra}


def test_advantage_and_carry_over_are_read_from_the_rows():
    hydra = lambda side, heads, s, v: _row(f"h-{side}-{heads}", "vera_hydraopt", s, v,  # noqa: E731
                                           params={"heads": heads, "side": side}, heads=2)
    vera_rows = [_row("individual", "individual", 1.0, 1.0), _row("ties", "vectors", 0.25, 0.6),
                 _row("task_arithmetic", "vectors", 0.25, 0.7), hydra("d", "application", 0.44, 0.8),
                 hydra("b", "language", 0.31, 0.65)]
    adv = vf.advantage(vera_rows, ["vera_hydraopt"], ["vectors"], "relative")
    assert adv["best_merge"]["name"] == "task_arithmetic" and adv["beat"]["name"] == "h-d-application"
    assert adv["multiple"] == pytest.approx(0.44 / 0.25)
    lora_rows = [_row("individual", "individual", 1.0, 1.0), _row("ties", "baseline", 0.025, 0.9),
                 _row("hydraopt-A-1-r8", "hydraopt", 0.025, 0.85, params={"heads": 1, "rank": 8, "side": "A"},
                      heads=1)]
    lora_adv = vf.advantage(lora_rows, ["hydraopt"], ["baseline", "peft"], "relative")
    assert lora_adv["beat"] is None
    assert vf.carry_over(lora_adv, adv)["verdict"] == "VeRA only"
    assert vf.carry_over(None, adv)["verdict"] == "not tested"
    lora_rows[2]["relative"] = 0.95
    lora_adv = vf.advantage(lora_rows, ["hydraopt"], ["baseline", "peft"], "relative")
    out = vf.carry_over(lora_adv, adv)
    assert out["verdict"] == "yes" and "1.8 times" in out["sentence"] and "1.0 times" in out["sentence"]
    vera_rows[3]["relative"] = 0.5
    assert vf.carry_over(lora_adv, vf.advantage(vera_rows, ["vera_hydraopt"], ["vectors"], "relative"))[
        "verdict"] == "no"
    assert vf.joint_front([(1.0, 0.5), (2.0, 0.4), (0.5, 0.5), (3.0, math.nan)]) == [2]
