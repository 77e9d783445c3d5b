"""`hydralib evaluate`: adapters (or the base model) on suite tasks, with a task -> adapter mapping."""

from __future__ import annotations

import json

import pytest

from hydralib.cli import EXIT_BAD_INPUT, main
from hydralib.presets import get_preset
from hydralib.suite.training import train_zoo


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    train_zoo(get_preset("tiny").with_overrides(train_steps=1, batch_size=2), root, kinds=("lora",), progress=False)
    return root / "lora"


def test_evaluate_adapters_mapping_and_json(tiny_zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYDRALIB_PRESET", "tiny")
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tiny_zoo / "*"), "--limit", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean exact match over 4 tasks" in printed
    scores = json.loads(out.read_text())["scores"]
    assert sorted(scores) == sorted(get_preset("tiny").tasks)
    assert all(v["n"] == 2 and v["adapter"] == t and 0.0 <= v["exact_match"] <= 1.0 for t, v in scores.items())
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"question_answering-en": "grammar_correction-en"}))
    assert main(["evaluate", str(tiny_zoo / "*"), "--mapping", str(mapping), "--limit", "2"]) == 0
    assert "question_answering-en  grammar_correction-en" in capsys.readouterr().out
    assert main(["evaluate", str(tiny_zoo / "*"), "--limit", "2", "--json", str(out)]) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err


def test_evaluate_errors(tiny_zoo, capsys, monkeypatch):
    monkeypatch.setenv("HYDRALIB_PRESET", "tiny")
    assert main(["evaluate", "--tasks", "smart_reply-en"]) == EXIT_BAD_INPUT
    assert "not in the 'tiny' preset" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_zoo / "grammar_correction-en"), "--tasks", "question_answering-en"]) == EXIT_BAD_INPUT
    assert "no adapter named ['question_answering-en']" in capsys.readouterr().err
