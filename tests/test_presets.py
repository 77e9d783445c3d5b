"""Presets are selected in one place (an environment variable) and are frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hydralib.presets import APPLICATIONS, LANGUAGES, PRESETS, get_device, get_preset


def test_default_is_the_5x8_suite(monkeypatch):
    monkeypatch.delenv("HYDRALIB_PRESET", raising=False)
    preset = get_preset()
    assert preset.name == "default" and preset.base_model == "smollm2-135m-instruct"
    assert len(preset.tasks) == 40 and preset.tasks[0] == f"{APPLICATIONS[0]}-{LANGUAGES[0]}"
    assert (preset.lora_rank, preset.lora_alpha) == (8, 16)


def test_env_selects_and_unknown_fails(monkeypatch):
    monkeypatch.setenv("HYDRALIB_PRESET", "tiny")
    assert get_preset().name == "tiny" and len(get_preset().tasks) == 4
    monkeypatch.setenv("HYDRALIB_PRESET", "huge")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_preset()


def test_paper_needs_a_local_model(monkeypatch, tmp_path):
    monkeypatch.delenv("HYDRALIB_PAPER_MODEL", raising=False)
    with pytest.raises(ValueError, match="HYDRALIB_PAPER_MODEL"):
        get_preset("paper")
    monkeypatch.setenv("HYDRALIB_PAPER_MODEL", str(tmp_path))
    assert get_preset("paper").base_model == str(tmp_path)


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny"].lora_rank = 99
    changed = PRESETS["tiny"].with_overrides(lora_rank=2)
    assert changed.lora_rank == 2 and PRESETS["tiny"].lora_rank == 4


def test_device(monkeypatch):
    monkeypatch.delenv("HYDRALIB_DEVICE", raising=False)
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("HYDRALIB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
