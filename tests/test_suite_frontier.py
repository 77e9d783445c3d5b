"""The frontier driver: tuning search, relative performance, Pareto front, and a tiny end-to-end run.

The tiny preset's base model is random (every exact match is 0), so the
end-to-end test checks invariants that hold whatever the scores: HydraOpt with
one head per task and enough rank reproduces every adapter, so it scores
exactly like the individual LoRAs on every task; storage is counted from the
tensors; a stored result is reused only when its input hash matches.
"""

from __future__ import annotations

import json
import math

import pytest

from hydralib.suite import frontier as fr


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 1.0), (0.5, 0.9), (0.5, 0.95), (0.2, 0.95), (0.1, 0.5), (0.3, 0.4)]
    assert fr.pareto_front(points) == [4, 3, 0]


def test_relative_leaves_out_tasks_whose_own_score_is_zero():
    value, left_out = fr.relative({"a": 0.5, "b": 0.2, "c": 0.3}, {"a": 1.0, "b": 0.4, "c": 0.0})
    assert value == pytest.approx(0.5) and left_out == 1
    value, left_out = fr.relative({"a": 0.0}, {"a": 0.0})
    assert math.isnan(value) and left_out == 1


def test_tune_finds_the_peak_of_lam_then_density():
    calls = []

    def score(values):
        calls.append(dict(values))
        return -abs(math.log2(values["lam"]) - 3) - abs(values["density"] - 0.8)

    spec = fr.MethodSpec("ties", "baseline", "ties", {}, ("lam", "density"))
    best, trials = fr.tune(score, spec)
    assert best == {"lam": 8.0, "density": 0.8}
    assert len(trials) == len(calls) == len({json.dumps(c, sort_keys=True) for c in calls})  # nothing evaluated twice


def test_tune_tries_half_when_doubling_does_not_help():
    spec = fr.MethodSpec("task_arithmetic", "baseline", "task_arithmetic", {}, ("lam",))
    best, trials = fr.tune(lambda v: -abs(v["lam"] - 0.5), spec)
    assert best == {"lam": 0.5} and [t["values"]["lam"] for t in trials] == [1.0, 2.0, 0.5, 0.25]
    best, trials = fr.tune(lambda v: -abs(math.log2(v["lam"]) + 5.3), spec)  # peak near 1/40
    assert best == {"lam": 1 / 32} and len(trials) == 8


def test_tune_goes_on_halving_through_a_plateau_of_zeros():
    """peft's linear merge of N adapters sharing their initial A is about N times the mean update: it scores 0
    at lam 1, 2 and 1/2 alike, and the search must go on halving to find the scale where it works."""
    spec = fr.MethodSpec("peft_linear", "peft", "linear", {}, ("lam",))
    best, trials = fr.tune(lambda v: 0.0 if v["lam"] > 0.1 else 0.05 - abs(v["lam"] - 1 / 32), spec)
    assert best == {"lam": 1 / 32}
    assert [t["values"]["lam"] for t in trials] == [1.0, 2.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 1 / 64]
    best, trials = fr.tune(lambda v: 0.0, spec)  # no signal anywhere: the first value stays
    assert best == {"lam": 1.0} and trials[-1]["values"]["lam"] == 1 / 128


@pytest.fixture(scope="module")
def tiny_frontier(tmp_path_factory):
    import os

    os.environ["HYDRALIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from hydralib.presets import get_preset

    preset = get_preset("tiny")
    n = len(preset.tasks)
    specs = [fr.MethodSpec("individual", "individual", "individual"),
             fr.MethodSpec("task_arithmetic", "baseline", "task_arithmetic", {"rank": preset.lora_rank}, ("lam",)),
             fr.MethodSpec("peft_linear", "peft", "linear", {}, ("lam",)),
             fr.MethodSpec("hydra-full", "hydraopt", "exact",
                           {"heads": "task", "rank": n * preset.lora_rank, "side": "A"}),
             fr.MethodSpec("hydra-1", "hydraopt", "exact", {"heads": 1, "rank": preset.lora_rank, "side": "B"})]
    yield preset, fr.run_frontier(preset, specs, n_eval=4, n_tune=2, progress=False)
    os.environ.pop("HYDRALIB_CACHE")


def test_full_rank_per_task_heads_score_like_the_adapters(tiny_frontier):
    _, result = tiny_frontier
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["hydra-full"]["scores"] == rows["individual"]["scores"]
    assert rows["hydra-full"]["relative_loss"] < 1e-6


def test_storage_is_counted_from_the_tensors(tiny_frontier):
    preset, result = tiny_frontier
    from hydralib.suite.artifacts import load_zoo
    from hydralib.storage import hydra_params, merged_lora_params, module_shapes, set_params

    aset = load_zoo(preset, "lora")
    rows = {r["name"]: r for r in result["rows"]}
    shapes = module_shapes(aset)
    assert rows["individual"]["stored"] == set_params(aset)
    assert rows["task_arithmetic"]["stored"] == merged_lora_params(shapes, preset.lora_rank)
    assert rows["peft_linear"]["stored"] == merged_lora_params(shapes, preset.lora_rank)
    assert rows["hydra-1"]["stored"] == hydra_params(shapes, preset.lora_rank, 1, side="B")
    assert rows["hydra-1"]["relative_storage"] == pytest.approx(rows["hydra-1"]["stored"] / set_params(aset))
    assert all(r["bytes_fp16"] == 2 * r["stored"] for r in result["rows"])
    assert all(t["values"]["lam"] > 0 for t in rows["task_arithmetic"]["trials"])


def test_stored_results_are_reused_only_when_the_hash_matches(tmp_path, monkeypatch):
    from hydralib.presets import get_preset
    from hydralib.suite import artifacts

    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path))
    preset = get_preset("tiny")
    calls = []
    real = fr.run_frontier

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fr, "run_frontier", counting)
    monkeypatch.setattr(fr, "default_methods", lambda p: [fr.MethodSpec("individual", "individual", "individual")])
    first = fr.frontier_results(preset, n_eval=2, n_tune=2)
    again = fr.frontier_results(preset, n_eval=2, n_tune=2)
    assert len(calls) == 1 and json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)  # NaN-safe
    assert artifacts.results_path(preset, "frontier").is_file()
    fr.frontier_results(preset, n_eval=3, n_tune=2)  # other inputs: recomputed
    assert len(calls) == 2


def test_an_interrupted_run_resumes_from_finished_rows(tmp_path, monkeypatch):
    from hydralib.presets import get_preset
    from hydralib.suite import artifacts

    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path))
    preset = get_preset("tiny")
    specs = [fr.MethodSpec("individual", "individual", "individual"),
             fr.MethodSpec("hydra-1", "hydraopt", "exact", {"heads": 1, "rank": preset.lora_rank, "side": "A"})]
    first = fr.run_frontier(preset, specs, n_eval=2, n_tune=2, progress=False)
    cached = sorted(p.name for p in (artifacts.zoo_dir(preset) / "results" / "frontier-rows").iterdir())
    assert len(cached) == 2 and cached[0].startswith("hydra-1-")
    monkeypatch.setattr(fr, "score", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = fr.run_frontier(preset, specs, n_eval=2, n_tune=2, progress=False)
    assert json.dumps(again["rows"], sort_keys=True) == json.dumps(first["rows"], sort_keys=True)


def test_workers_sharing_a_claims_directory_compute_each_method_once(tmp_path):
    """Dynamic sharding: a method another worker has claimed is skipped; its row comes from that worker."""
    specs = [fr.MethodSpec(name, "baseline", "task_arithmetic") for name in ("a", "b", "c")]
    built = []

    def build(spec, values):
        built.append(spec.name)
        return None, None, 1, {}

    def rows_of(claims):
        return fr.method_rows(specs, tmp_path / "rows", row_key=lambda spec: "0" * 16, build=build,
                              score_on=lambda split, eval_set, mapping: {"t": 1.0}, progress=False, claims=claims)

    claims = tmp_path / "claims"
    assert fr.claim(claims, "b-" + "0" * 16) and not fr.claim(claims, "b-" + "0" * 16)  # "the other worker" took b
    assert [r["name"] for r in rows_of(claims)] == ["a", "c"] and built == ["a", "c"]
    assert [r["name"] for r in rows_of(tmp_path / "other-run")] == ["a", "b", "c"]  # a and c from the cache
    assert built == ["a", "c", "b"]
    assert fr.claim(None, "anything")  # without a claims directory every method is this worker's
