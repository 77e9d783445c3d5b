"""Faults: a command killed (SIGKILL, by its pid) at any point leaves each output absent or complete.

A child process runs a command through a small ``-c`` wrapper (:data:`WRAPPER`, test code only) that counts the
files it writes (``Path.write_text``/``write_bytes``, ``safetensors.torch.save_file``, ``Figure.savefig``) and
its renames (``os.replace``); at event ``k`` it prints ``PAUSED k`` and waits, and the test kills it by its pid
with SIGKILL. Each output must then be absent or complete, and a later successful run (``--overwrite``) must
leave no temporary sibling (``.<name>.tmp-*``, ``.<name>.old-*``) anywhere: the atomic helpers remove those of
dead processes (:func:`hydralib.atomic.clean_stale`).

Run this file as a script to print, for every case, what a killed run left behind and what is left after the
later run: ``python tests/test_faults.py`` (with ``PYTHONPATH`` pointing at the code to try).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
N_TASKS = 6
MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]

# the child: count written files and renames; pause (to be killed) at the event HYDRALIB_TEST_PAUSE_AT
WRAPPER = r"""
import os, sys, time, pathlib
pause_name, _, pause_at = os.environ["HYDRALIB_TEST_PAUSE_AT"].rpartition(":")
pause_at = int(pause_at)
count, counts = 0, {}

def event(what):
    global count
    count += 1
    counts[what] = counts.get(what, 0) + 1
    if (counts[what] if pause_name else count) == pause_at and pause_name in ("", what):
        print(f"PAUSED {count} {what}", flush=True)
        time.sleep(600)

def wrap(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        event(name)
        return out
    setattr(owner, name, wrapper)

import safetensors.torch, matplotlib
matplotlib.use("Agg")
import matplotlib.figure
for owner, name in ((pathlib.Path, "write_text"), (pathlib.Path, "write_bytes"), (safetensors.torch, "save_file"),
                    (matplotlib.figure.Figure, "savefig"), (os, "replace")):
    wrap(owner, name)
if sys.argv[1] == "write_result":  # the zoo's and the frontier's result files
    import json
    from hydralib.suite.frontier import write_result
    write_result(pathlib.Path(sys.argv[2]), {"hash": "h", "rows": list(range(1000))})
    code = 0
else:
    from hydralib.cli import main
    code = main(sys.argv[1:])
print(f"EVENTS {count}", flush=True)
sys.exit(code)
"""


def make_adapters(root: Path) -> list[Path]:
    """``N_TASKS`` small LoRA adapters (r=4) over 4 modules, written as PEFT directories."""
    from hydralib import AdapterSet

    generator = torch.Generator().manual_seed(0)
    factors = {f"task{i}": {m: (torch.randn(4, 16, generator=generator), torch.randn(12, 4, generator=generator), 2.0)
                            for m in MODULES} for i in range(N_TASKS)}
    aset = AdapterSet.from_factors(factors, base_model="toy/base")
    return [aset.save_peft(t, Path(root).resolve() / "adapters" / t) for t in aset.tasks]


# scenario -> (command line with {adapters} and {work}, {output: kind})
SCENARIOS = {
    "merge --export-peft": (["merge", "{adapters}", "--heads", "task", "--out", "{work}/bundle",
                             "--export-peft", "{work}/export"], {"bundle": "bundle", "export": "export"}),
    "merge --quantize --export-peft": (["merge", "{adapters}", "--heads", "2", "--quantize", "int8", "--out",
                                        "{work}/quantized", "--export-peft", "{work}/export"],
                                       {"quantized": "compressed", "export": "export"}),
    "compress --export-peft": (["compress", "{adapters}", "--method", "truncate", "--rank", "2", "--out",
                                "{work}/compressed", "--export-peft", "{work}/export"],
                               {"compressed": "compressed", "export": "export"}),
    "analyze": (["analyze", "{adapters}", "--out", "{work}/analysis"], {"analysis": "analysis"}),
    "result file": (["write_result", "{work}/frontier.json"], {"frontier.json": "result"}),
}


def state(path: Path, kind: str) -> str:
    """``absent``, ``complete`` or ``partial: <why>`` of one output."""
    if not path.exists():
        return "absent"
    try:
        if kind == "export":
            from hydralib import load_adapters

            names = sorted(p.name for p in path.iterdir())
            want = [f"task{i}" for i in range(N_TASKS)]
            if names != want:
                return f"partial: {len([n for n in names if n in want])} of {N_TASKS} task dirs, entries {names}"
            load_adapters([path / n for n in names])
        elif kind == "bundle":
            from hydralib.merge import load_bundle

            load_bundle(path)
        elif kind == "compressed":
            from hydralib.compress import load_compressed

            load_compressed(path)
        elif kind == "analysis":
            names = sorted(p.name for p in path.iterdir())
            want = sorted(["summary.json", "spectra_by_layer.png", "dendrogram_a.png", "dendrogram_b.png"]
                          + [f"similarity_{k}.png" for k in ("overlap", "cosine", "cka")])
            if names != want:
                return f"partial: {names}"
            json.loads((path / "summary.json").read_text())
        elif kind == "result":
            assert len(json.loads(path.read_text())["rows"]) == 1000
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means partial
        return f"partial: {type(exc).__name__}: {str(exc)[:80]}"
    return "complete"


def leftovers(work: Path) -> list[str]:
    """Temporary siblings anywhere under ``work`` (relative paths)."""
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def run_child(argv: list[str], pause_at: int | str, cwd: Path, timeout: float = 300) -> tuple[str, int | None]:
    """Run the wrapper, pausing at event ``pause_at`` (``k``: the k-th of all; ``"save_file:k"``: the k-th of one
    kind) to kill it; return ``("killed", k)`` when it was killed at event k, else ``("exit <code>", events)``."""
    env = dict(os.environ, HYDRALIB_TEST_PAUSE_AT=str(pause_at), PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)),
               OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    stderr = open(cwd / ".." / f"{cwd.name}.stderr", "w+")  # a file, not a pipe: progress bars cannot block it
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)
    deadline = time.monotonic() + timeout
    events = None
    try:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{argv[0]}: no output in {timeout} s")
            line = proc.stdout.readline()
            if line.startswith("PAUSED"):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed", int(line.split()[1])
            if line.startswith("EVENTS"):
                events = int(line.split()[1])
            if line == "":
                code = proc.wait()
                stderr.seek(0)
                assert code == 0, stderr.read()[-3000:]
                return f"exit {code}", events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr.close()


def argv_for(scenario: str, adapters: list[Path], work: Path) -> list[str]:
    out = []
    for arg in SCENARIOS[scenario][0]:
        if arg == "{adapters}":
            out += [str(a) for a in adapters]
        else:
            out.append(arg.format(work=work))
    return out


def count_events(scenario: str, adapters: list[Path], work: Path) -> int:
    """Events of an uninterrupted run (its outputs are removed again)."""
    import shutil

    work.mkdir(parents=True)
    _, events = run_child(argv_for(scenario, adapters, work), 10**9, work)
    for name, kind in SCENARIOS[scenario][1].items():
        assert state(work / name, kind) == "complete"
    shutil.rmtree(work)
    return events


def kill_points(events: int, full: bool) -> list[int]:
    """Events to kill at: the first write, a third and two thirds of the way, the last-but-one and the last."""
    points = {1, max(1, events // 3), max(1, 2 * events // 3), max(1, events - 1), events}
    return sorted(range(1, events + 1) if full else points)


def rerun_here(argv: list[str]) -> None:
    """The later successful run, in this process (the killed child's pid is dead, as after a crash)."""
    if argv[0] == "write_result":
        from hydralib.suite.frontier import write_result

        write_result(Path(argv[1]), {"hash": "h", "rows": list(range(1000))})
        return
    from hydralib.cli import main

    assert main(argv + ["--overwrite"]) == 0


def kill_and_rerun(scenario: str, adapters: list[Path], work: Path, k: int | str, in_process: bool = False) -> dict:
    """Kill a run at event ``k``; then run again (``--overwrite``). What each step left behind."""
    work.mkdir(parents=True)
    argv = argv_for(scenario, adapters, work)
    how, k = run_child(argv, k, work)
    outputs = SCENARIOS[scenario][1]
    after_kill = {name: state(work / name, kind) for name, kind in outputs.items()}
    left_after_kill = leftovers(work)
    if in_process:
        rerun_here(argv)
    else:
        run_child(argv + (["--overwrite"] if argv[0] != "write_result" else []), 10**9, work)
    return {"scenario": scenario, "k": k, "how": how, "after_kill": after_kill, "tmp_after_kill": left_after_kill,
            "after_rerun": {name: state(work / name, kind) for name, kind in outputs.items()},
            "tmp_after_rerun": leftovers(work)}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("faults"))


def check_case(case: dict) -> None:
    assert case["how"] == "killed", case
    assert all(s in ("absent", "complete") for s in case["after_kill"].values()), case
    assert all(s == "complete" for s in case["after_rerun"].values()), case
    assert case["tmp_after_rerun"] == [], case


# the default run: one kill in the middle of each multi-file output (a child each, the later run in this process)
MIDWAY = [("merge --export-peft", "save_file:3"),  # the bundle, then 2 of the 6 exported adapters
          ("merge --quantize --export-peft", "save_file:4"),
          ("compress --export-peft", "save_file:2"),
          ("analyze", "savefig:3"),
          ("result file", "write_text:1")]


@pytest.mark.parametrize("scenario,pause", MIDWAY, ids=[s for s, _ in MIDWAY])
def test_killed_midway_leaves_each_output_absent_or_complete(scenario, pause, adapters, tmp_path):
    check_case(kill_and_rerun(scenario, adapters, tmp_path / "work", pause, in_process=True))


def test_killed_overwrite_keeps_the_previous_export(adapters, tmp_path):
    """``--overwrite`` killed midway: the export of the earlier run is still there, whole and unchanged."""
    from hydralib.cli import main

    work = tmp_path / "work"
    work.mkdir()
    argv = argv_for("merge --export-peft", adapters, work)
    assert main(argv) == 0
    (work / "export" / "notes.txt").write_text("mine")  # another entry of the directory: kept
    export = work / "export"
    before = {p.relative_to(export): p.read_bytes() for p in sorted(export.rglob("*")) if p.is_file()}
    how, _ = run_child(argv + ["--overwrite", "--heads", "2"], "save_file:3", work)  # the bundle, then 2 tasks
    assert how == "killed"
    assert state(work / "bundle", "bundle") == "complete"  # replaced by the killed run (2 heads), whole
    assert {p.relative_to(export): p.read_bytes() for p in sorted(export.rglob("*")) if p.is_file()} == before
    assert leftovers(work)  # the killed run's temporaries, until the next write
    assert main(argv + ["--overwrite", "--heads", "2"]) == 0
    assert state(work / "bundle", "bundle") == "complete" and leftovers(work) == []
    assert sorted(p.name for p in export.iterdir()) == sorted([f"task{i}" for i in range(N_TASKS)] + ["notes.txt"])


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_killed_anywhere_leaves_each_output_absent_or_complete(scenario, adapters, tmp_path):
    events = count_events(scenario, adapters, tmp_path / "count")
    for k in kill_points(events, full=False):
        check_case(kill_and_rerun(scenario, adapters, tmp_path / f"kill{k}", k))


def test_clean_stale_removes_only_dead_processes_siblings(tmp_path):
    from hydralib.atomic import atomic_file, clean_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".out.json.tmp-{dead.pid}-abc", f".out.json.old-{dead.pid}", f".out.json.tmp-{os.getpid()}-x",
                 f".other.json.tmp-{dead.pid}-abc", ".out.json.tmp-legacy"):
        (tmp_path / name).write_text("x")
    (tmp_path / f".out.json.tmp-{dead.pid}-dir").mkdir()
    (tmp_path / f".out.json.tmp-{dead.pid}-dir" / "f").write_text("x")
    assert sorted(p.name for p in clean_stale(tmp_path / "out.json")) == sorted(
        [f".out.json.tmp-{dead.pid}-abc", f".out.json.old-{dead.pid}", f".out.json.tmp-{dead.pid}-dir"])
    with atomic_file(tmp_path / "out.json") as tmp:
        assert tmp.name.startswith(f".out.json.tmp-{os.getpid()}-")
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.json", f".out.json.tmp-{os.getpid()}-x", f".other.json.tmp-{dead.pid}-abc", ".out.json.tmp-legacy"])


def test_atomic_entries_keeps_other_entries_and_replaces_at_once(tmp_path):
    from hydralib.atomic import atomic_entries
    from hydralib.errors import OutputExistsError

    out = tmp_path / "export"
    with atomic_entries(out, ["a", "b"]) as tmp:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            (tmp / name / "f").write_text(name)
    (out / "keep.txt").write_text("mine")
    (out / ".a.tmp-1-stale").mkdir()  # left inside by a killed write of `a`: dropped
    with pytest.raises(OutputExistsError, match="export/a: already exists"):
        with atomic_entries(out, ["c", "a"]):
            pass
    with pytest.raises(RuntimeError):
        with atomic_entries(out, ["a"], overwrite=True) as tmp:
            (tmp / "a").mkdir()
            raise RuntimeError("fails midway")
    assert (out / "a" / "f").read_text() == "a"  # unchanged by the failure
    with atomic_entries(out, ["a", "c"], overwrite=True) as tmp:
        for name in ("a", "c"):
            (tmp / name).mkdir()
            (tmp / name / "f").write_text(name + "2")
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c", "keep.txt"]
    assert [(out / n / "f").read_text() for n in "abc"] == ["a2", "b", "c2"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    with pytest.raises(ValueError, match="cannot be a directory entry"):
        with atomic_entries(out, ["../x"]):
            pass


def test_failed_export_leaves_nothing(tmp_path, monkeypatch, adapters):
    """An error in the middle of an export (disk full at the third task) leaves no export and no temporary."""
    import safetensors.torch

    from hydralib import load_adapters
    from hydralib.merge import export_peft, hydraopt

    result = hydraopt(load_adapters(adapters), heads="task")
    calls = []
    original = safetensors.torch.save_file

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="disk full"):
        export_peft(result, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


if __name__ == "__main__":  # print what every kill left behind (for the closing note)
    import tempfile

    full = "--full" in sys.argv
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        adapters = make_adapters(root)
        for scenario in sorted(SCENARIOS):
            events = count_events(scenario, adapters, root / "count")
            print(f"## {scenario}: {events} events in an uninterrupted run")
            for k in kill_points(events, full):
                case = kill_and_rerun(scenario, adapters, root / f"{scenario.replace(' ', '_')}-{k}", k)
                print(f"- killed at event {k}: {case['after_kill']}, temporaries {case['tmp_after_kill']}; "
                      f"after a later run: {case['after_rerun']}, temporaries {case['tmp_after_rerun']}")
