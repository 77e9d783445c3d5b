"""`hydralib bench` on the command line: help, a tiny run, refusal to overwrite, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from hydralib.cli import EXIT_BAD_INPUT, main

TINY = ["--preset", "smollm2", "--tasks", "3", "--rank", "2", "--d-model", "64", "--d-kv", "32", "--layers", "1",
        "--repeats", "1", "--no-isolate", "--quiet"]


def test_help_lists_options_and_methods():
    proc = subprocess.run([sys.executable, "-m", "hydralib.cli", "bench", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--preset", "--methods", "--repeats", "--device", "--threads", "--out", "--overwrite", "--scaling",
                   "--threads-compare", "--adapters"):
        assert option in proc.stdout
    assert "peft-svd" in proc.stdout and "llama-3.2-1b" in proc.stdout


def test_tiny_run_writes_json_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", *TINY, "--methods", "hydraopt-exact", "peft-svd", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "hydraopt-exact" in printed and "peft svd time / exact HydraOpt time" in printed
    result = json.loads(out.read_text())
    assert list(result["methods"]) == ["hydraopt-exact", "peft-svd"] and result["complete"]
    assert result["settings"]["threads"] == 1 and result["machine"]["torch_threads"] == 1
    before = out.read_bytes()

    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "Traceback" not in err
    assert out.read_bytes() == before  # nothing lost

    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(out.read_text())["complete"]


def test_bad_arguments_are_one_line(capsys):
    assert main(["bench", *TINY, "--methods", "no-such-method"]) == EXIT_BAD_INPUT
    assert "unknown benchmark methods" in capsys.readouterr().err
    assert main(["bench", "--tasks", "0", "--quiet"]) == EXIT_BAD_INPUT
    assert "--tasks must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--scaling", "--methods", "peft-svd", "--quiet"]) == EXIT_BAD_INPUT
    assert "scaling curves run our methods only" in capsys.readouterr().err


def test_threads_compare_alternates_the_two_settings_and_derives_its_targets(tmp_path, capsys):
    """`--threads-compare`: one fresh process per method, setting and round; ratios and targets from those times."""
    from hydralib.bench.report import load_result
    from hydralib.bench.threads import SETTINGS

    out = tmp_path / "threads.json"
    argv = ["bench", "--threads-compare", "--preset", "smollm2", "--tasks", "3", "--rank", "2", "--d-model", "64",
            "--d-kv", "32", "--layers", "1", "--repeats", "2", "--methods", "hydraopt-exact", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    assert "default/1" in capsys.readouterr().out
    result = load_result(out)
    assert result["kind"] == "threads" and tuple(result["settings"]["compared"]) == SETTINGS == ("1", "default")
    record = result["methods"]["hydraopt-exact"]
    assert all(len(record["seconds"][s]) == 2 for s in SETTINGS)  # one time per round and setting
    medians = {s: sorted(record["seconds"][s])[0] / 2 + sorted(record["seconds"][s])[1] / 2 for s in SETTINGS}
    assert abs(record["ratio_default_to_one"] - medians["default"] / medians["1"]) < 2e-3
    (target,) = result["targets"]
    assert target["met"] == (target["value"] <= 1.0) and target["value"] == record["ratio_default_to_one"]
    assert result["whole_process"] == {}  # synthetic presets: methods only


def test_threads_compare_child_environment():
    from hydralib.bench.machine import THREAD_ENV
    from hydralib.bench.threads import setting_env

    assert all(setting_env("1")[k] == "1" for k in THREAD_ENV)
    assert not set(THREAD_ENV) & set(setting_env("default"))
