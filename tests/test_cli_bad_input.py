"""Bad input through the command line: every case x every command that reads adapters.

Each case must exit with code 1, print exactly one line on stderr that names
the offending path, print no traceback, and leave an existing output in place.
Run this file as a script to print the message each case produces:
``python tests/test_cli_bad_input.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import LLAMA_TARGETS, save_peft_adapter, tiny_llama  # noqa: E402
from conftest import edit_config as _config, edit_tensors as _tensors  # noqa: E402

from hydralib.cli import main  # noqa: E402
from hydralib.commands.common import EXIT_BAD_INPUT  # noqa: E402
from hydralib.peft_io import CONFIG_NAME, WEIGHTS_NAME  # noqa: E402


def _first_a(tensors):
    return next(k for k in sorted(tensors) if "lora_A" in k)


def _garbage(d):
    (d / WEIGHTS_NAME).write_bytes(b"\x00\x01 not a safetensors file")


def _truncated(d):
    data = (d / WEIGHTS_NAME).read_bytes()
    (d / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])


def _wrong_shape(d):
    _tensors(d, lambda t: t.__setitem__(_first_a(t), torch.zeros(3, t[_first_a(t)].shape[1])))


def _nan(d):
    def poison(t):
        t[_first_a(t)][0, 0] = float("nan")

    _tensors(d, poison)


def _empty(d):
    for child in d.iterdir():
        child.unlink()


def _non_utf8(d):
    (d / CONFIG_NAME).write_bytes(b'{"peft_type": "LORA", "r": 4, "note": "\xff\xfe"}')


def _pickle_only(d):
    (d / WEIGHTS_NAME).unlink()
    (d / "adapter_model.bin").write_bytes(b"\x80\x04 pickled, never opened")


def _int8(d):
    _tensors(d, lambda t: t.update({k: (v * 100).to(torch.int8) for k, v in t.items()}))


def _deep(d):
    (d / CONFIG_NAME).write_text("[" * 100000 + "]" * 100000)


# name -> (how to break a copy of a good adapter, the part of the path the message must name)
CASES = {
    "NaN lora_alpha": (lambda d: _config(d, lora_alpha=float("nan")), CONFIG_NAME),
    "infinite lora_alpha": (lambda d: _config(d, lora_alpha=float("inf")), CONFIG_NAME),
    "string lora_alpha": (lambda d: _config(d, lora_alpha="8"), CONFIG_NAME),
    "huge lora_alpha": (lambda d: _config(d, lora_alpha=1e300), WEIGHTS_NAME),
    "boolean r": (lambda d: _config(d, r=True), CONFIG_NAME),
    "float r": (lambda d: _config(d, r=4.0), CONFIG_NAME),
    "negative rank_pattern": (lambda d: _config(d, rank_pattern={"q_proj": -2}), CONFIG_NAME),
    "nested rank_pattern": (lambda d: _config(d, rank_pattern={"q_proj": {"r": 4}}), CONFIG_NAME),
    "bad regex in rank_pattern": (lambda d: _config(d, rank_pattern={"(": 4}), CONFIG_NAME),
    "NaN alpha_pattern": (lambda d: _config(d, alpha_pattern={"q_proj": float("nan")}), CONFIG_NAME),
    "string use_rslora": (lambda d: _config(d, use_rslora="false"), CONFIG_NAME),
    "deeply nested config": (_deep, CONFIG_NAME),
    "int8 factors": (_int8, WEIGHTS_NAME),
    "corrupt safetensors": (_garbage, WEIGHTS_NAME),
    "truncated safetensors": (_truncated, WEIGHTS_NAME),
    "wrong shapes": (_wrong_shape, ""),
    "mixed base models": (lambda d: _config(d, base_model_name_or_path="some-other-model"), ""),
    "DoRA": (lambda d: _config(d, use_dora=True), ""),
    "NaN in weights": (_nan, ""),
    "empty directory": (_empty, ""),
    "non-UTF-8 config": (_non_utf8, CONFIG_NAME),
    "huge declared rank": (lambda d: _config(d, r=10**9), ""),
    "pickle checkpoint only": (_pickle_only, ""),
    "path is a file": (None, ""),
}

COMMANDS = ("info", "analyze", "merge", "merge-ties", "compress", "evaluate")


def make_case(name: str, good: Path, tmp: Path) -> Path:
    """A broken copy of ``good`` (or a file, for 'path is a file') under ``tmp``."""
    breaker, _ = CASES[name]
    if breaker is None:
        path = tmp / "not-a-directory.json"
        path.write_text("{}")
        return path
    bad = Path(shutil.copytree(good, tmp / "bad-adapter"))
    breaker(bad)
    return bad


def argv_for(command: str, bad: Path, other: Path, out: Path) -> list[str]:
    if command == "info":
        return ["info", str(bad), str(other)]
    if command == "analyze":
        return ["analyze", str(bad), str(other), "--out", str(out)]
    if command == "merge":
        return ["merge", str(bad), str(other), "--out", str(out), "--export-peft", f"{out}-peft"]
    if command == "compress":
        return ["compress", str(bad), str(other), "--method", "truncate", "--rank", "2", "--out", str(out),
                "--export-peft", f"{out}-peft"]
    if command == "merge-ties":
        return ["merge", str(bad), str(other), "--method", "ties", "--density", "0.5", "--out", str(out)]
    if command == "evaluate":
        return ["evaluate", str(bad), str(other), "--preset", "tiny", "--tasks", "grammar_correction-en", "--limit", "1",
                "--json", str(out / "scores.json")]
    raise ValueError(command)


def run_case(name: str, command: str, good: Path, other: Path, tmp: Path, capsys) -> tuple[int, str, Path]:
    bad = make_case(name, good, tmp)
    out = tmp / "output"
    if command == "evaluate":
        out.mkdir()  # evaluate writes a file (--json) inside it
    code = main(argv_for(command, bad, other, out))
    return code, capsys.readouterr().err, bad


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from peft import LoraConfig

    root = tmp_path_factory.mktemp("cli-bad")
    base = tiny_llama()
    cfg = lambda: LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, lora_dropout=0.0)  # noqa: E731
    return (save_peft_adapter(root / "good", base, cfg(), seed=1),
            save_peft_adapter(root / "other", base, cfg(), seed=2))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line_and_keeps_outputs(case, command, adapters, tmp_path, capsys):
    good, other = adapters
    code, err, bad = run_case(case, command, good, other, tmp_path, capsys)
    assert code == EXIT_BAD_INPUT, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"hydralib {command.split('-')[0]}: error: "), err
    assert str(bad) in err, err  # names the file or directory
    assert CASES[case][1] in err
    out = tmp_path / "output"  # nothing half-written
    assert list(out.iterdir()) == [] if command == "evaluate" else not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {bad.name, "output"} if command == "evaluate" else {bad.name})


@pytest.mark.parametrize("command", ["analyze", "merge", "compress", "evaluate"])
def test_existing_output_needs_overwrite(command, adapters, tmp_path, capsys):
    good, other = adapters
    out = tmp_path / "existing-output"
    out.mkdir()
    (out / "keep.txt").write_text("written before")
    (out / "scores.json").write_text("{}")
    assert main(argv_for(command, good, other, out)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err and err.count("\n") == 1
    assert (out / "keep.txt").read_text() == "written before" and (out / "scores.json").read_text() == "{}"


if __name__ == "__main__":  # print the message of every case (for release notes and closing notes)
    import tempfile

    class _Capture:
        def readouterr(self):
            return type("R", (), {"err": ""})()

    from peft import LoraConfig

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        base = tiny_llama()
        good = save_peft_adapter(root / "good", base, LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS), seed=1)
        other = save_peft_adapter(root / "other", base, LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS), seed=2)
        import contextlib
        import io

        for case in sorted(CASES):
            tmp = root / case.replace(" ", "_")
            tmp.mkdir()
            buffer = io.StringIO()
            with contextlib.redirect_stderr(buffer):
                bad = make_case(case, good, tmp)
                main(argv_for("info", bad, other, tmp / "out"))
            print(f"- {case}: `{buffer.getvalue().strip().replace(str(root), '<tmp>')}`")
