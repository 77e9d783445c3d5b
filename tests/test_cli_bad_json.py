"""Bad JSON side inputs and bad ``--heads`` values through the command line.

Side inputs: ``merge --metadata`` and ``analyze --metadata`` (``{task: {application,
language}}``) and ``evaluate --mapping`` (``{task: adapter}``). Each bad case must
exit with code 1 and print exactly one line on stderr, ``hydralib <command>:
error: ...``, that names the JSON file and the problem, with no traceback; and
nothing may be written: no output directory or file created, no partial file,
and an existing output (replaced only on success with ``--overwrite``) left
byte for byte as it was.

``--heads`` values that are wrong whatever the input (``0``, negative, empty)
are argparse usage errors (exit code 2: argparse's usage, then one
``hydralib merge: error: argument --heads: ...`` line); values that are wrong
for the adapters given (more heads than adapters, a metadata key without
``--metadata``) are bad input (exit code 1, one line).

Decisions these tests pin down:

* metadata may describe tasks that are not among the adapters (one file for a
  whole zoo); a task of the adapters that has no entry is an error only where the
  metadata is needed, i.e. ``merge --heads <key>``; with ``--heads task`` or an
  integer K it is fine (the metadata is only recorded in the bundle).
* every key of an ``evaluate --mapping`` must be a task of the preset (a key that
  is not can never be used and is most likely a typo), even when ``--tasks``
  does not evaluate it; a mapped adapter must be among the adapters given only
  for the tasks evaluated.

Run this file as a script to print the message each case produces:
``python tests/test_cli_bad_json.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import LLAMA_TARGETS, save_peft_adapter, tiny_llama  # noqa: E402

from hydralib.cli import main  # noqa: E402
from hydralib.commands.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE  # noqa: E402

MISSING, DIRECTORY = object(), object()
TASK = "grammar_correction-en"  # a task of the tiny preset
GOOD_META = {"good": {"application": "grammar", "language": "en"},
             "other": {"application": "reply", "language": "en"}}

# name -> (file content, text the message must contain); bad as a file, for every command that reads one
FILE_CASES = {
    "file missing": (MISSING, "no such file"),
    "a directory": (DIRECTORY, "it is a directory"),
    "not JSON": ('{"good": {"application": "grammar"', "not valid JSON"),
    "empty file": ("", "not valid JSON"),
    "non-UTF-8 bytes": (b'{"good": {"application": "gr\xe4mmar"}}', "not UTF-8"),
    "top level not an object": ([["good", "grammar"]], "must be a JSON object"),
}
# merge --heads application --metadata FILE
METADATA_CASES = {
    "task entry not an object": ({"good": "grammar", "other": GOOD_META["other"]}, "'good'"),
    "task of the adapters missing": ({"other": GOOD_META["other"]}, "'good'"),
    "requested key missing for a task": ({"good": {"language": "en"}, "other": GOOD_META["other"]}, "'application'"),
    "value of the wrong type": ({"good": {"application": ["grammar"]}, "other": GOOD_META["other"]}, "string"),
    "null value": ({"good": {"application": None}, "other": GOOD_META["other"]}, "null"),
}
# evaluate --tasks grammar_correction-en --mapping FILE
MAPPING_CASES = {
    "value not a string": ({TASK: 3}, "adapter name"),
    "maps to an adapter not given": ({TASK: "nosuch-adapter"}, "'nosuch-adapter'"),
    "maps a task that is not a suite task": ({"no_such_task-xx": "good", TASK: "good"}, "'no_such_task-xx'"),
    "mapping without adapters": ({TASK: "good"}, "no adapters"),
}
# merge --heads VALUE (no metadata): (value, exit code, text the message must contain)
HEADS_CASES = {
    "--heads 0": ("0", EXIT_USAGE, "at least 1"),
    "--heads -1": ("-1", EXIT_USAGE, "at least 1"),
    "--heads ''": ("", EXIT_USAGE, "empty"),
    "--heads 1000 (more heads than tasks)": ("1000", EXIT_BAD_INPUT, "2 adapters"),
    "--heads nosuchkey without --metadata": ("nosuchkey", EXIT_BAD_INPUT, "--metadata"),
}

SIDE_CASES = (
    [(command, case) for command in ("merge", "analyze", "evaluate") for case in FILE_CASES]
    + [("merge", case) for case in METADATA_CASES]
    + [("analyze", "task entry not an object")]
    + [("evaluate", case) for case in MAPPING_CASES]
)


def _content(command: str, case: str):
    for table in (FILE_CASES, METADATA_CASES if command != "evaluate" else MAPPING_CASES):
        if case in table:
            return table[case]
    raise KeyError(case)


def write_side_file(path: Path, content) -> None:
    if content is MISSING:
        return
    if content is DIRECTORY:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")


def argv_for(command: str, adapters: list[Path], out: Path, side: Path | None, existing: bool,
             heads: str | None = None) -> list[str]:
    """Command line of ``command`` on ``adapters`` writing under ``out``, reading the side file ``side``."""
    paths = [str(p) for p in adapters]
    extra = ["--overwrite"] if existing else []
    if command == "merge":
        argv = ["merge", *paths, "--out", str(out / "bundle"), "--export-peft", str(out / "per-task")]
        argv += ["--heads", "application" if heads is None else heads]
        argv += ["--metadata", str(side)] if side is not None else []
    elif command == "analyze":
        argv = ["analyze", *paths, "--out", str(out / "analysis"), "--metadata", str(side)]
    elif command == "evaluate":
        argv = ["evaluate", *paths, "--preset", "tiny", "--tasks", TASK, "--limit", "1",
                "--json", str(out / "scores.json"), "--mapping", str(side)]
    else:
        raise ValueError(command)
    return argv + extra


def make_outputs(out: Path, command: str) -> None:
    """Outputs of an earlier run, which a failed run must leave as they are."""
    out.mkdir()
    if command == "evaluate":
        (out / "scores.json").write_text('{"written": "before"}')
        return
    for name in ("bundle", "per-task", "analysis"):
        (out / name).mkdir()
        (out / name / "keep.txt").write_text("written before")


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_side_case(command: str, case: str, existing: bool, adapters, tmp: Path, capsys) -> tuple[int, str, Path]:
    content, _ = _content(command, case)
    side = tmp / ("mapping.json" if command == "evaluate" else "metadata.json")
    write_side_file(side, content)
    out = tmp / "output"
    if existing:
        make_outputs(out, command)
    elif command == "evaluate":
        out.mkdir()  # --json writes a file inside it
    if case == "mapping without adapters":
        adapters = []
    before = snapshot(tmp)
    code = main(argv_for(command, adapters, out, side, existing))
    assert snapshot(tmp) == before, "a failed run wrote, changed or removed something"
    return code, capsys.readouterr().err, side


def run_heads_case(case: str, existing: bool, adapters, tmp: Path, capsys) -> tuple[int, str]:
    value = HEADS_CASES[case][0]
    out = tmp / "output"
    if existing:
        make_outputs(out, "merge")
    before = snapshot(tmp)
    try:
        code = main(argv_for("merge", adapters, out, None, existing, heads=value))
    except SystemExit as exc:  # argparse
        code = exc.code
    assert snapshot(tmp) == before, "a failed run wrote, changed or removed something"
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from peft import LoraConfig

    root = tmp_path_factory.mktemp("cli-bad-json")
    base = tiny_llama()
    cfg = lambda: LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, lora_dropout=0.0)  # noqa: E731
    return [save_peft_adapter(root / "good", base, cfg(), seed=1),
            save_peft_adapter(root / "other", base, cfg(), seed=2)]


def _one_line(err: str, command: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err, err
    assert err.startswith(f"hydralib {command}: error: "), err


@pytest.mark.parametrize("existing", [False, True], ids=["no-output", "existing-output"])
@pytest.mark.parametrize("command,case", SIDE_CASES, ids=[f"{c}-{k}" for c, k in SIDE_CASES])
def test_bad_side_json_gives_one_clear_line_and_writes_nothing(command, case, existing, adapters, tmp_path, capsys):
    code, err, side = run_side_case(command, case, existing, adapters, tmp_path, capsys)
    assert code == EXIT_BAD_INPUT, err
    _one_line(err, command)
    assert str(side) in err, err  # names the JSON file
    assert _content(command, case)[1] in err, err  # and the problem
    if case in FILE_CASES and case != "top level not an object":
        assert f"cannot read {'mapping' if command == 'evaluate' else 'metadata'} JSON (" in err, err


@pytest.mark.parametrize("existing", [False, True], ids=["no-output", "existing-output"])
@pytest.mark.parametrize("case", list(HEADS_CASES))
def test_bad_heads(case, existing, adapters, tmp_path, capsys):
    _, expected_code, fragment = HEADS_CASES[case]
    code, err = run_heads_case(case, existing, adapters, tmp_path, capsys)
    assert code == expected_code, err
    assert "Traceback" not in err, err
    if expected_code == EXIT_USAGE:  # argparse: usage lines, then exactly one error line
        lines = err.splitlines()
        assert lines[0].startswith("usage: hydralib merge"), err
        assert [line for line in lines if "error:" in line] == lines[-1:], err
        assert lines[-1].startswith("hydralib merge: error: argument --heads: "), err
    else:
        _one_line(err, "merge")
    assert fragment in err, err


def test_metadata_is_checked_only_where_it_is_needed(adapters, tmp_path, capsys):
    """With --heads task, metadata may miss adapters' tasks and describe others; it is recorded as given."""
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"other": GOOD_META["other"], "not-an-adapter": {"application": "x"}}))
    out = tmp_path / "bundle"
    argv = ["merge", *map(str, adapters), "--heads", "task", "--metadata", str(meta), "--out", str(out)]
    assert main(argv) == EXIT_OK
    assert "2 heads" in capsys.readouterr().out
    from hydralib.merge import load_bundle

    assert load_bundle(out).metadata == {"good": {}, "other": GOOD_META["other"]}


def test_good_metadata_groups_heads(adapters, tmp_path, capsys):
    meta = tmp_path / "metadata.json"
    meta.write_bytes(b"\xef\xbb\xbf" + json.dumps({**GOOD_META, "other": {"application": "grammar"}}).encode())  # BOM
    assert main(["merge", *map(str, adapters), "--heads", "application", "--metadata", str(meta),
                 "--out", str(tmp_path / "bundle")]) == EXIT_OK
    assert "1 heads" in capsys.readouterr().out


if __name__ == "__main__":  # print the message of every case (for release notes and closing notes)
    import contextlib
    import io
    import tempfile

    class _Capture:
        def readouterr(self):
            return type("R", (), {"err": ""})()

    from peft import LoraConfig

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        base = tiny_llama()
        cfg = lambda: LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS)  # noqa: E731
        pair = [save_peft_adapter(root / "good", base, cfg(), seed=1),
                save_peft_adapter(root / "other", base, cfg(), seed=2)]
        runs = [(f"{c} {k}", lambda t, c=c, k=k: run_side_case(c, k, False, pair, t, _Capture())[0])
                for c, k in SIDE_CASES]
        runs += [(f"merge {k}", lambda t, k=k: run_heads_case(k, False, pair, t, _Capture())[0]) for k in HEADS_CASES]
        for i, (name, run) in enumerate(runs):
            tmp = root / f"case{i}"
            tmp.mkdir()
            buffer = io.StringIO()
            with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(io.StringIO()):
                code = run(tmp)
            line = buffer.getvalue().strip().splitlines()[-1] if buffer.getvalue().strip() else "(nothing)"
            print(f"- {name} (exit {code}): `{line.replace(str(root), '<tmp>')}`")
