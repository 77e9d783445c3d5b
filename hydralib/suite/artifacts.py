"""Where the adapter zoo and its results live, and loading them for chapters.

The ``default`` preset's zoo is committed under ``data/`` (``data/adapters/<group>/<task>``
and ``data/results/zoo.json``); chapters load it and never retrain. Any other
preset (``tiny`` in the test suite) gets its zoo trained and evaluated on first
use into a cache directory (seconds for ``tiny``), so the same chapter code
runs everywhere.

``$HYDRALIB_DATA`` overrides the data directory (default: ``data/`` next to the
``hydralib`` package, i.e. the repository root); ``$HYDRALIB_CACHE`` the cache
(default ``~/.cache/hydralib``).

Example
-------
>>> from hydralib.suite.artifacts import load_zoo, zoo_results
>>> lora = load_zoo("tiny", group="lora")            # doctest: +SKIP
>>> zoo_results("tiny")["own"]["lora"]               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import HydraError

DATA_ENV = "HYDRALIB_DATA"
CACHE_ENV = "HYDRALIB_CACHE"


def _preset(preset):
    from ..presets import get_preset

    return preset if hasattr(preset, "tasks") else get_preset(preset)


def data_dir() -> Path:
    """The repository's ``data/`` directory (or ``$HYDRALIB_DATA``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    """The cache directory (``$HYDRALIB_CACHE`` or ``~/.cache/hydralib``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hydralib")


def zoo_dir(preset=None) -> Path:
    """The directory that holds a preset's zoo: ``adapters/`` and ``results/`` (committed for ``default``)."""
    preset = _preset(preset)
    if preset.name == "default":
        return data_dir()
    return cache_dir() / f"zoo-{preset.name}"


def results_path(preset=None, name: str = "zoo") -> Path:
    """``<zoo dir>/results/<name>.json``."""
    return zoo_dir(preset) / "results" / f"{name}.json"


def ensure_zoo(preset=None, kinds: Sequence[str] = ("lora", "control", "vera"), progress: bool = False,
               results: bool = True) -> Path:
    """Make sure a preset's zoo exists; return its directory.

    ``default``: the committed zoo must be present (a clear error says how to
    regenerate it otherwise); ``results=False`` needs only the adapters. Other
    presets: train and evaluate the missing adapters in this process
    (resumable), then write ``results/zoo.json``.
    """
    preset = _preset(preset)
    root = zoo_dir(preset)
    need = results
    results = results_path(preset)
    if preset.name == "default":
        if not need and (root / "adapters").is_dir():
            return root
        if not results.is_file():
            raise HydraError(f"hydralib.suite.artifacts: {results} is missing; the committed zoo is incomplete "
                             "(regenerate it with `make zoo`, hours on a CPU)")
        return root
    if results.is_file():
        return root
    import torch

    from ..atomic import atomic_file
    from ..presets import get_device
    from .tasks import make_suite
    from .zoo import merge_results, run_worker

    device = get_device()
    shard = root / "adapters" / ".shards" / "shard0.json"
    shard.parent.mkdir(parents=True, exist_ok=True)
    run_worker(preset, root / "adapters", make_suite(preset), 0, 1, preset.n_test, device, shard, kinds=tuple(kinds))
    merged = merge_results(preset, [shard], preset.n_test, {"device": str(device), "workers": 1,
                                                           "torch_threads": torch.get_num_threads()})
    results.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(results, overwrite=True) as tmp:
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
    return root


def task_metadata(task: str, seed: int | None = None, group: str | None = None) -> dict:
    """``{"application", "language"[, "seed", "group"]}`` of a suite task name ``"<application>-<language>"``."""
    application, language = task.rsplit("-", 1)
    meta = {"application": application, "language": language}
    if seed is not None:
        meta["seed"] = seed
    if group is not None:
        meta["group"] = group
    return meta


def zoo_groups(preset=None) -> dict[str, list[str]]:
    """``{group: [tasks present]}`` of a preset's zoo (groups: ``lora``, ``vera``, ``lora-seed<k>``)."""
    from .training import is_complete, zoo_jobs

    preset = _preset(preset)
    root = zoo_dir(preset) / "adapters"
    groups: dict[str, list[str]] = {}
    for job in zoo_jobs(preset):
        if is_complete(job.directory(root)):
            groups.setdefault(job.group, []).append(job.task)
    return groups


def load_zoo(preset=None, group: str = "lora", tasks: Sequence[str] | None = None, base_model=None, **kwargs):
    """One group of a preset's zoo as an :class:`~hydralib.adapters.AdapterSet` with task metadata.

    ``group``: ``"lora"``, ``"vera"`` or ``"lora-seed<k>"``. Metadata per task:
    application, language, seed (from the training record) and group.
    ``base_model`` is passed to :func:`~hydralib.adapters.load_adapters` (VeRA shapes).
    """
    from ..adapters import load_adapters
    from .training import RECORD_NAME

    preset = _preset(preset)
    ensure_zoo(preset, results=False)
    present = zoo_groups(preset).get(group, [])
    tasks = list(present if tasks is None else tasks)
    missing = [t for t in tasks if t not in present]
    if not tasks or missing:
        raise HydraError(f"hydralib.suite.artifacts: zoo group {group!r} of preset {preset.name!r} under "
                         f"{zoo_dir(preset) / 'adapters'} lacks {missing[:3] or 'every task'}")
    root = zoo_dir(preset) / "adapters" / group
    metadata = {}
    for t in tasks:
        record = json.loads((root / t / RECORD_NAME).read_text(encoding="utf-8"))
        metadata[t] = task_metadata(t, seed=int(record["seed"]), group=group)
    return load_adapters([root / t for t in tasks], tasks=tasks, metadata=metadata, base_model=base_model, **kwargs)


def zoo_results(preset=None) -> dict:
    """The zoo's evaluation results (``results/zoo.json``): base, own and transfer scores."""
    preset = _preset(preset)
    ensure_zoo(preset)
    return json.loads(results_path(preset).read_text(encoding="utf-8"))
