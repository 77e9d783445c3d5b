"""The data manifest records every file's sha256 and origin, and detects changes."""

from __future__ import annotations

import json

from hydralib.manifest import MANIFEST_NAME, build_manifest, verify_manifest, write_manifest


def test_manifest_records_and_verifies(tmp_path):
    adapter = tmp_path / "adapters" / "lora" / "task-a"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "training.json").write_text(json.dumps({"preset": "tiny", "seed": 3, "command": "train it"}))
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "adapters" / ".tmp-partial").mkdir()
    (tmp_path / "adapters" / ".tmp-partial" / "x").write_text("ignored")
    write_manifest(tmp_path, default_command="make results")
    files = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]
    assert set(files) == {"adapters/lora/task-a/adapter_model.safetensors", "adapters/lora/task-a/training.json",
                          "results.json"}
    weights = files["adapters/lora/task-a/adapter_model.safetensors"]
    assert weights["seed"] == 3 and weights["preset"] == "tiny" and weights["command"] == "train it"
    assert weights["sha256"] == "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"  # sha256(b"weights")
    assert files["results.json"]["command"] == "make results"
    assert verify_manifest(tmp_path) == []
    (tmp_path / "results.json").write_text('{"changed": true}')
    assert verify_manifest(tmp_path) == ["results.json"]
    assert build_manifest(tmp_path)["files"]["results.json"]["sha256"] != files["results.json"]["sha256"]


def test_manifest_names_the_command_of_each_results_file(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.json").write_text(json.dumps({"command": "hydralib bench --preset smollm2"}))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "frontier.json").write_text("{}")
    (tmp_path / "results" / "other.json").write_text("[1, 2]")
    (tmp_path / "results" / "frontier-rows").mkdir()
    (tmp_path / "results" / "frontier-rows" / "ties-0123.json").write_text("{}")
    files = build_manifest(tmp_path, default_command="fallback")["files"]
    assert files["bench/run.json"]["command"] == "hydralib bench --preset smollm2"
    assert files["results/frontier.json"]["command"].startswith("make frontier")
    assert "results/frontier-rows/ties-0123.json" not in files  # a row cache, not an artefact
    assert files["results/other.json"]["command"] == "fallback"


def test_committed_data_matches_its_manifest():
    """Every file under data/ is listed in data/MANIFEST.json with its current sha256 (update it with
    ``python -c 'from hydralib.manifest import write_manifest; write_manifest("data")'``)."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    listed = set(json.loads((data / MANIFEST_NAME).read_text())["files"])
    assert verify_manifest(data) == []
    assert set(build_manifest(data)["files"]) == listed


def test_every_row_cache_of_the_suite_is_kept_out_of_the_manifest():
    """A suite module that caches rows under ``results/<name>-rows/`` must have that folder in CACHE_DIRS, or a
    checkout that ran it no longer matches its manifest."""
    import re
    from pathlib import Path

    from hydralib.manifest import CACHE_DIRS

    suite = Path(__file__).resolve().parents[1] / "hydralib" / "suite"
    used = {m for f in suite.glob("*.py") for m in re.findall(r'results_path\(preset, "([a-z-]+-rows)"\)', f.read_text())}
    assert len(used) >= 5 and {f"results/{u}/" for u in used} <= set(CACHE_DIRS)


def test_every_committed_result_names_the_command_that_wrote_it():
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    files = json.loads((data / MANIFEST_NAME).read_text())["files"]
    results = {k: v for k, v in files.items() if k.startswith(("results/", "bench/")) and k.endswith(".json")}
    assert results and not [k for k, v in results.items() if not v.get("command")]
