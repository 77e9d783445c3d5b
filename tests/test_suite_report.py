"""The zoo chapter's summaries of training records and scores (hydralib.suite.report)."""

from __future__ import annotations

import pytest

from hydralib.presets import get_preset
from hydralib.suite import report


def _records(steps):
    return {task: {"steps": n, "seconds": 1.0} for task, n in steps.items()}


def test_steps_summary_names_the_common_count_and_the_exceptions():
    records = _records({"a": 60, "b": 240, "c": 60, "d": 240, "e": 60, "f": 100})
    assert report.steps_summary(records) == (60, {240: ["b", "d"], 100: ["f"]})
    assert report.steps_text(records) == "60 (100 for 1 task; 240 for 2 tasks)"
    assert report.steps_text(_records({"a": 5, "b": 5})) == "5"
    # a tie goes to the smaller count (the preset's default is the one most adapters share)
    assert report.steps_summary(_records({"a": 5, "b": 9}))[0] == 5


def _own(scores):
    return {t: {"exact_match": v, "n": 100} for t, v in scores.items()}


def test_steps_evidence_compares_with_control_adapters_that_kept_the_common_count():
    tasks = get_preset("tiny").tasks
    longer, plain = tasks[0], tasks[1]
    preset = get_preset("tiny").with_overrides(control_seeds=(1, 2),
                                               train_steps_by_job=(("lora", longer, 20), ("lora-seed2", longer, 20)))
    results = {"base": _own({longer: 0.0, plain: 0.0}),
               "own": {"lora": _own({longer: 0.9, plain: 0.8}), "lora-seed1": _own({longer: 0.4, plain: 0.7}),
                       "lora-seed2": _own({longer: 0.85}), "vera": _own({longer: 0.3})}}
    evidence = report.steps_evidence(results, preset, [longer])
    assert evidence["own"] == {longer: pytest.approx(0.9)}
    # seed 2 trained as long as seed 0 here and VeRA is another kind: only seed 1 is the shorter comparison
    assert evidence["shorter"] == {("lora-seed1", longer): pytest.approx(0.4)}
    assert evidence["shorter_groups"] == ["lora-seed1"] and evidence["shorter_steps"] == preset.train_steps
    without_controls = {"base": results["base"], "own": {"lora": results["own"]["lora"]}}
    assert report.steps_evidence(without_controls, preset, [longer])["shorter"] == {}
