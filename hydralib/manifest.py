"""``data/MANIFEST.json``: the sha256, origin and producing command of every committed artefact.

For a file inside an adapter directory the entry also records the preset,
seed and command from the directory's ``training.json``. :func:`verify_manifest`
reports files whose content no longer matches.

Example
-------
>>> write_manifest("data", default_command="python -m hydralib.suite.zoo")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .atomic import atomic_file

MANIFEST_NAME = "MANIFEST.json"

#: Folders of per-method row caches (resuming an interrupted frontier run): not artefacts, not committed
#: (``.gitignore``), not in the manifest. The frontier JSON next to them is the artefact.
CACHE_DIRS = ("results/frontier-rows/", "results/vera-frontier-rows/", "results/storage-frontier-rows/",
              "results/recipes-rows/", "results/adapter-types-rows/")

#: The command that writes each committed results file (paths relative to ``data/``); a JSON file that records
#: its own top-level ``"command"`` (the benchmark outputs) says that instead.
RESULT_COMMANDS = {
    "results/zoo.json": "make zoo  (python -m hydralib.suite.zoo --root data/adapters --results data/results/zoo.json)",
    "results/frontier.json": "make frontier  (python -m hydralib.suite.frontier --recompute)",
    "results/vera-frontier.json": "make vera-frontier  (python -m hydralib.suite.vera_frontier --recompute)",
    "results/storage-frontier.json": "make storage-frontier  (python -m hydralib.suite.storage_frontier --recompute)",
    "results/recipes.json": "make recipes  (python -m hydralib.suite.recipes measure --recompute)",
    "results/adapter_types.json": "python -m hydralib.suite.adapter_types measure --recompute",
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_for(path: Path, root: Path) -> dict:
    for parent in path.parents:
        record = parent / "training.json"
        if record.is_file():
            data = json.loads(record.read_text(encoding="utf-8"))
            return {k: data.get(k) for k in ("preset", "seed", "command", "kind", "task")}
        if parent == root:
            break
    return {}


def _recorded_command(path: Path) -> str | None:
    """The top-level ``"command"`` string of a JSON file, if it has one (unreadable JSON: ``None``)."""
    if path.suffix != ".json":
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) and command else None


def build_manifest(root: str | Path, default_command: str = "") -> dict:
    """``{"files": {relative path: {"sha256", "bytes", ...}}}`` for every file under ``root`` but the manifest,
    hidden files and the row caches (:data:`CACHE_DIRS`)."""
    root = Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                       and not any(part.startswith(".") for part in p.relative_to(root).parts)
                       and not p.relative_to(root).as_posix().startswith(CACHE_DIRS)):
        entry = {"sha256": sha256(path), "bytes": path.stat().st_size}
        rel = path.relative_to(root).as_posix()
        entry.update(_record_for(path, root)
                     or {"command": _recorded_command(path) or RESULT_COMMANDS.get(rel) or default_command})
        files[rel] = entry
    return {"files": files}


def write_manifest(root: str | Path, default_command: str = "") -> Path:
    """Write ``root/MANIFEST.json`` atomically and return its path."""
    target = Path(root) / MANIFEST_NAME
    manifest = build_manifest(root, default_command)
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return target


def verify_manifest(root: str | Path) -> list[str]:
    """Relative paths whose sha256 differs from the manifest, or that are listed but missing."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    bad = []
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file() or sha256(path) != entry["sha256"]:
            bad.append(rel)
    return bad
