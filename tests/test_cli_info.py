"""`hydralib info` on adapters written by stock peft for two architectures, and its error contract."""

from __future__ import annotations

import json
import subprocess
import sys

from hydralib.cli import EXIT_BAD_INPUT, EXIT_USAGE, main
from hydralib.peft_io import WEIGHTS_NAME


def test_info_llama_tables(lora_dirs, capsys):
    assert main(["info", *map(str, lora_dirs)]) == 0
    out = capsys.readouterr().out
    assert "3 LORA adapters, 8 modules, base model tiny-llama" in out
    assert "model.layers.1.self_attn.k_proj  16 x 32" in out
    assert "all 3 adapters" in out and "1.000" in out
    assert "grammar-de" in out


def test_info_gpt2_json(gpt2_lora_dir, capsys):
    assert main(["info", str(gpt2_lora_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["base_model"] == "tiny-gpt2"
    modules = {m["module"]: m for m in summary["modules"]}
    assert modules["transformer.h.0.attn.c_attn"]["d_out"] == 96
    assert modules["transformer.h.0.attn.c_attn"]["fan_in_fan_out"] is True
    assert summary["tasks"][0]["ranks"] == [4] and summary["tasks"][0]["scalings"] == [1.0]
    assert summary["storage"][-1]["relative"] == 1.0


def test_bad_input_is_one_line_on_stderr(lora_dirs, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (bad / WEIGHTS_NAME).write_bytes(b"junk")
    assert main(["info", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hydralib info: error: ") and str(bad / WEIGHTS_NAME) in err


def test_console_script_and_usage_errors(lora_dirs):
    exe = [sys.executable, "-m", "hydralib.cli"]
    ok = subprocess.run([*exe, "info", str(lora_dirs[0])], capture_output=True, text=True)
    assert ok.returncode == 0 and "1 LORA adapters" in ok.stdout
    usage = subprocess.run([*exe, "info"], capture_output=True, text=True)
    assert usage.returncode == EXIT_USAGE and "usage:" in usage.stderr
    helped = subprocess.run([*exe, "info", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "storage table" in helped.stdout
    debug = subprocess.run([*exe, "--debug", "info", str(lora_dirs[0] / "nope")], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
