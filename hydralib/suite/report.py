"""Tables, numbers and figures of the adapter-zoo chapter (``book/zoo.md``), read from the zoo's files.

Nothing here trains or evaluates: every function reads what the zoo wrote
(training records, ``results/zoo.json``, the adapter directories) or what the
task generators produce, and returns plain rows, numbers or a matplotlib
figure. Tasks are laid out as an application x language grid in the preset's
order (application-major, languages in the preset's order).

Scores are exact-match fractions in [0, 1]. Means over an empty group are NaN
(never a warning), so a preset with one application or a zoo without some
group still renders.

Example
-------
>>> from hydralib.presets import get_preset
>>> preset = get_preset("tiny")
>>> grid({"grammar_correction-en": 1.0}, preset).tolist()
[[1.0, nan], [nan, nan]]
>>> short_task("question_answering-de")
'QA-de'
>>> code_span("a`b")
'``a`b``'
"""

from __future__ import annotations

import json
import unicodedata
from fnmatch import fnmatch
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import plotting, storage

APP_SHORT = {
    "grammar_correction": "grammar",
    "question_answering": "QA",
    "smart_reply": "reply",
    "summarisation": "headline",
    "tone_adjustment": "tone",
}
MB = 1e6  # bytes in a megabyte (decimal)


# ----------------------------------------------------------------------------- names and text


def split_task(task: str) -> tuple[str, str]:
    """``"smart_reply-fr"`` -> ``("smart_reply", "fr")``."""
    application, language = task.rsplit("-", 1)
    return application, language


def short_task(task: str) -> str:
    """A short axis label: ``"question_answering-de"`` -> ``"QA-de"``."""
    application, language = split_task(task)
    return f"{APP_SHORT.get(application, application)}-{language}"


def application_label(application: str) -> str:
    """``"grammar_correction"`` -> ``"grammar correction"``."""
    return application.replace("_", " ")


def ordered(tasks: Iterable[str], preset) -> list[str]:
    """``tasks`` sorted by application, then language, in the preset's order (unknown ones last)."""
    apps, langs = list(preset.applications), list(preset.languages)

    def key(task):
        a, l = split_task(task)
        return (apps.index(a) if a in apps else len(apps), langs.index(l) if l in langs else len(langs), task)

    return sorted(tasks, key=key)


def mean(values: Iterable[float]) -> float:
    """Mean of the finite values, NaN when there are none (no warning)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def join_words(words: Iterable[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"`` (empty string for no words)."""
    words = list(words)
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def code_span(text: str) -> str:
    """``text`` as one Markdown code span for a table cell.

    Newlines are shown as ``⏎``, other separators as spaces, control and format characters are dropped
    (a random model can emit any byte), and the fence is one backtick longer
    than the longest run of backticks inside, so nothing is parsed as markup.
    """
    text = text.replace("\r\n", "\n").replace("\n", " ⏎ ")
    kinds = (unicodedata.category(ch)[0] for ch in text)
    text = "".join(" " if kind == "Z" else ch for ch, kind in zip(text, kinds) if kind != "C")
    if not text.strip():
        return "(empty)"
    longest = current = 0
    for ch in text:
        current = current + 1 if ch == "`" else 0
        longest = max(longest, current)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ----------------------------------------------------------------------------- the suite


def suite_rows(preset) -> list[list[str]]:
    """One row per task: application (on the first row of its group), language, prompt, answer (test example 0)."""
    from .tasks import describe_suite

    rows, previous = [], None
    for row in describe_suite(preset.seed, preset.tasks):
        label = application_label(row["application"]) if row["application"] != previous else ""
        previous = row["application"]
        rows.append([label, row["language"], code_span(row["prompt"]), code_span(row["answer"])])
    return rows


def package_data_rows(preset) -> list[list]:
    """Per language: babel locale, faker locale, and how many names each package supplies to the generators.

    Columns: language, CLDR locale, faker locale, first names, family names,
    CLDR exemplar cities (the time-zone cities whose names are usable in every
    language of the suite), CLDR language names.
    """
    from . import generators as g

    cities = g._city_names()
    rows = []
    for lang in preset.languages:
        first, last = g._person_names(lang)
        rows.append([lang, g.BABEL_LOCALES[lang], g.FAKER_LOCALES[lang], len(first), len(last),
                     len(cities[lang]), len(g._language_names(lang))])
    return rows


def substitution_rows(preset) -> list[list[str]]:
    """The entries of :data:`hydralib.suite.tasks.SUBSTITUTIONS` that apply to a task of ``preset``."""
    from .tasks import SUBSTITUTIONS

    rows = []
    for where, what in SUBSTITUTIONS.items():
        patterns = [p.strip() for p in where.split(",")]
        if any(fnmatch(task, p) for task in preset.tasks for p in patterns):
            rows.append([", ".join(code_span(p) for p in patterns), what])
    return rows


# ----------------------------------------------------------------------------- training records


def training_records(preset, group: str) -> dict[str, dict]:
    """``{task: training record}`` of one zoo group (``training.json`` of each finished adapter), in task order."""
    from .artifacts import zoo_dir, zoo_groups
    from .training import RECORD_NAME

    root = zoo_dir(preset) / "adapters" / group
    tasks = ordered(zoo_groups(preset).get(group, []), preset)
    return {t: json.loads((root / t / RECORD_NAME).read_text(encoding="utf-8")) for t in tasks}


def adapter_config(preset, group: str, task: str) -> dict:
    """The ``adapter_config.json`` peft wrote for one adapter of the zoo."""
    from ..peft_io import CONFIG_NAME
    from .artifacts import zoo_dir

    return json.loads((zoo_dir(preset) / "adapters" / group / task / CONFIG_NAME).read_text(encoding="utf-8"))


def seconds_summary(records: Iterable[Mapping]) -> dict:
    """Training time of a set of adapters from their records.

    ``mean_s``, ``min_s``, ``max_s``: wall seconds per adapter; ``core_hours``:
    the sum of seconds x torch threads / 3600 (each adapter trained in one
    worker process with ``torch_threads`` threads); ``threads`` and
    ``devices``: the distinct values recorded; ``n``: how many records.
    """
    records = list(records)
    seconds = [float(r["seconds"]) for r in records]
    return {
        "n": len(records),
        "mean_s": mean(seconds),
        "min_s": min(seconds) if seconds else float("nan"),
        "max_s": max(seconds) if seconds else float("nan"),
        "core_hours": sum(float(r["seconds"]) * int(r.get("torch_threads", 1)) for r in records) / 3600,
        "threads": sorted({int(r.get("torch_threads", 1)) for r in records}),
        "devices": sorted({str(r.get("device", "?")) for r in records}),
    }


def steps_summary(records: Mapping[str, Mapping]) -> tuple[int, dict[int, list[str]]]:
    """``(most common steps, {other steps: [tasks]})`` of a group's training records."""
    from collections import Counter

    counts = Counter(int(r["steps"]) for r in records.values())
    common = max(counts, key=lambda n: (counts[n], -n))
    others: dict[int, list[str]] = {}
    for task, record in records.items():
        if int(record["steps"]) != common:
            others.setdefault(int(record["steps"]), []).append(task)
    return common, others


def steps_text(records: Mapping[str, Mapping]) -> str:
    """``"60"``, or ``"60 (240 for 4 tasks)"`` when some adapters of the group trained for other step counts."""
    common, others = steps_summary(records)
    extra = "; ".join(f"{n} for {len(tasks)} task{'s' if len(tasks) > 1 else ''}" for n, tasks in sorted(others.items()))
    return f"{common} ({extra})" if extra else str(common)


def steps_evidence(results: Mapping, preset, tasks: Sequence[str], group: str = "lora") -> dict:
    """Why some adapters of ``group`` trained longer: their own-task exact match next to that of the same tasks'
    adapters in the other LoRA groups of the zoo (the seed controls) that kept ``preset.train_steps``.

    Returns ``{"own": {task: score}, "shorter": {(other group, task): score}, "shorter_steps": steps,
    "shorter_groups": [groups]}``; ``shorter`` is empty when no other group holds these tasks with the
    common step count (e.g. a zoo without a control set).
    """
    own_scores = scores_of(results, group)
    shorter = {}
    for other in sorted(results["own"]):
        if other == group or not other.startswith("lora"):
            continue
        others = scores_of(results, other)
        for task in tasks:
            if task in others and preset.steps_for(other, task) == preset.train_steps:
                shorter[other, task] = others[task]
    return {"own": {t: own_scores[t] for t in tasks if t in own_scores}, "shorter": shorter,
            "shorter_steps": preset.train_steps, "shorter_groups": sorted({g for g, _ in shorter})}


def recipe_rows(preset) -> list[list]:
    """One row per zoo group: kind, adapters, rank, alpha, learning rate, steps, batch, autocast, seeds, seconds.

    Rank and alpha come from peft's ``adapter_config.json`` (VeRA has no alpha),
    the rest from the training records.
    """
    from .artifacts import zoo_groups

    rows = []
    for group in sorted(zoo_groups(preset), key=lambda g: (g.startswith("vera"), g)):
        records = training_records(preset, group)
        if not records:
            continue
        first_task, first = next(iter(records.items()))
        config = adapter_config(preset, group, first_task)
        summary = seconds_summary(records.values())
        rows.append([
            group, first["kind"], len(records), config.get("r"), config.get("lora_alpha", "-"),
            f"{first['learning_rate']:g}", steps_text(records), first["batch_size"], first["compute_dtype"],
            ", ".join(str(s) for s in sorted({r["seed"] for r in records.values()})),
            f"{summary['mean_s']:.0f} ({summary['min_s']:.0f}-{summary['max_s']:.0f})",
        ])
    return rows


RECIPE_HEADER = ["group", "kind", "adapters", "r", "alpha", "lr", "steps", "batch", "compute", "seed",
                 "seconds, mean (min-max)"]


def final_losses(records: Mapping[str, Mapping], last: int = 10) -> dict[str, float]:
    """``{task: mean training loss of the last ``last`` steps}``."""
    return {t: mean(r["losses"][-last:]) for t, r in records.items()}


def application_colors(preset) -> dict[str, tuple]:
    """One colour of the book palette per application."""
    import seaborn as sns

    return dict(zip(preset.applications, sns.color_palette(plotting.PALETTE, max(1, len(preset.applications)))))


def loss_figure(records: Mapping[str, Mapping], preset):
    """Training loss against step, one line per task, coloured by application (log scale)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colors = application_colors(preset)
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    for task, record in records.items():
        losses = np.asarray(record["losses"], dtype=float)
        ax.plot(np.arange(1, len(losses) + 1), losses, color=colors.get(split_task(task)[0], "0.5"),
                linewidth=0.9, alpha=0.75)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (answer tokens)")
    handles = [Line2D([], [], color=colors[a], label=application_label(a)) for a in preset.applications]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- scores


def scores_of(results: Mapping, group: str) -> dict[str, float]:
    """``{task: exact match}`` of ``"base"`` or of an own-task group (``"lora"``, ``"vera"``, ``"lora-seed1"``)."""
    table = results["base"] if group == "base" else results["own"].get(group, {})
    return {t: float(v["exact_match"]) for t, v in table.items()}


def grid(values: Mapping[str, float], preset) -> np.ndarray:
    """``values`` ``{task: x}`` as an (applications x languages) array, NaN where a task is missing."""
    out = np.full((len(preset.applications), len(preset.languages)), np.nan)
    for task, value in values.items():
        a, l = split_task(task)
        if a in preset.applications and l in preset.languages:
            out[preset.applications.index(a), preset.languages.index(l)] = value
    return out


def grid_heatmap(ax, values: Mapping[str, float], preset, *, title: str | None = None, vmin: float = 0.0,
                 vmax: float = 1.0, center: float | None = None, cbar_label: str | None = None):
    """An application x language heatmap of ``values`` on ``ax``, annotated; returns ``ax``."""
    plotting.heatmap(ax, grid(values, preset), [application_label(a) for a in preset.applications],
                     list(preset.languages), vmin=vmin, vmax=vmax, center=center, annot=True, fmt=".2f",
                     cbar_label=cbar_label, title=title)
    ax.tick_params(axis="y", rotation=0)
    return ax


def score_figure(panels: Mapping[str, Mapping[str, float]], preset):
    """Side-by-side application x language heatmaps of exact match, one panel per entry of ``panels``."""
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(0.75 * len(preset.languages) * n + 2.5 * n,
                                            0.5 * len(preset.applications) + 1.8), squeeze=False)
    for i, (ax, (title, values)) in enumerate(zip(axes[0], panels.items())):
        grid_heatmap(ax, values, preset, title=title, cbar_label="exact match" if i == n - 1 else None)
        if i:
            ax.set_yticklabels([])
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- transfer


def transfer_frame(transfer: Mapping, preset) -> tuple[list[str], list[str], np.ndarray]:
    """(adapters, tasks, matrix) of the transfer results, rows and columns ordered by application then language."""
    adapters, tasks = list(transfer["adapters"]), list(transfer["tasks"])
    matrix = np.asarray(transfer["matrix"], dtype=float).reshape(len(adapters), len(tasks))
    rows, cols = ordered(adapters, preset), ordered(tasks, preset)
    matrix = matrix[[adapters.index(a) for a in rows]][:, [tasks.index(t) for t in cols]]
    return rows, cols, matrix


def transfer_figure(transfer: Mapping, preset):
    """Heatmap of every adapter (rows) on every task (columns), with lines between applications."""
    import matplotlib.pyplot as plt

    rows, cols, matrix = transfer_frame(transfer, preset)
    side = max(4.0, 0.2 * len(cols) + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    plotting.heatmap(ax, matrix, [short_task(t) for t in rows], [short_task(t) for t in cols], vmin=0, vmax=1,
                     annot=len(cols) <= 8, cbar_label="exact match")
    for labels, line in ((rows, ax.axhline), (cols, ax.axvline)):
        apps = [split_task(t)[0] for t in labels]
        for k in range(1, len(apps)):
            if apps[k] != apps[k - 1]:
                line(k, color="white", linewidth=1.5)
    ax.set_ylabel("adapter")
    ax.set_xlabel("task of the test examples")
    ax.tick_params(labelsize="x-small" if len(cols) > 12 else "small")
    fig.tight_layout()
    return fig


def transfer_blocks(transfer: Mapping, preset) -> dict[str, float]:
    """Mean transfer exact match in three blocks: ``own`` (the diagonal), ``same_application`` (another
    language of the same application) and ``other_application``."""
    rows, cols, matrix = transfer_frame(transfer, preset)
    blocks: dict[str, list[float]] = {"own": [], "same_application": [], "other_application": []}
    for i, adapter in enumerate(rows):
        for j, task in enumerate(cols):
            if adapter == task:
                blocks["own"].append(matrix[i, j])
            elif split_task(adapter)[0] == split_task(task)[0]:
                blocks["same_application"].append(matrix[i, j])
            else:
                blocks["other_application"].append(matrix[i, j])
    return {k: mean(v) for k, v in blocks.items()}


def same_application_transfer(transfer: Mapping, preset) -> dict[str, float]:
    """Per application: mean exact match of its adapters on its tasks in *other* languages (NaN if none)."""
    rows, cols, matrix = transfer_frame(transfer, preset)
    return {app: mean(matrix[i, j] for i, a in enumerate(rows) for j, t in enumerate(cols)
                      if a != t and split_task(a)[0] == app and split_task(t)[0] == app)
            for app in preset.applications}


def specialisation(transfer: Mapping, preset) -> dict[str, dict[str, float]]:
    """Per task: the own adapter's score, the mean score of the adapters of the *other* applications, and
    their difference (``margin``), all on the transfer examples. NaN where a term is missing."""
    rows, cols, matrix = transfer_frame(transfer, preset)
    out = {}
    for j, task in enumerate(cols):
        own = matrix[rows.index(task), j] if task in rows else float("nan")
        others = mean(matrix[i, j] for i, a in enumerate(rows) if split_task(a)[0] != split_task(task)[0])
        out[task] = {"own": float(own), "others": others, "margin": float(own - others)}
    return out


# ----------------------------------------------------------------------------- seed control


def difference_se(p: float, n: int, q: float, m: int) -> float:
    """Standard error of the difference of two independent binomial proportions ``p`` (of ``n``) and ``q`` (of ``m``).

    >>> round(difference_se(0.5, 100, 0.5, 100), 4)
    0.0707
    """
    return float(np.sqrt(p * (1 - p) / max(n, 1) + q * (1 - q) / max(m, 1)))


def seed_control(results: Mapping, reference: str = "lora") -> tuple[list[str], list[list], dict]:
    """Own-task scores of the seed-control groups (``lora-seed<k>``) next to the reference group's.

    Returns (header, rows, summary): one row per task present in a control
    group; ``summary`` has ``groups``, ``n`` (task x group pairs),
    ``mean_abs_diff``, ``max_abs_diff``, ``max_task``, ``max_group`` (NaN /
    None when there is no control group), the mean scores of both sides, and
    ``beyond_2se``: how many differences exceed two standard errors of the
    difference of two independent binomial proportions (:func:`difference_se`,
    with each side's number of test examples). Both sides are scored on the
    same test examples, so this is a rough yardstick of test noise, not a test.
    """
    base, counts = scores_of(results, reference), {t: v["n"] for t, v in results["own"].get(reference, {}).items()}
    groups = [g for g in results["own"] if g.startswith(f"{reference}-seed")]
    scores = {g: scores_of(results, g) for g in groups}
    tasks = [t for t in base if any(t in scores[g] for g in groups)]
    rows, diffs, beyond = [], [], 0
    for task in tasks:
        row = [task, f"{base[task]:.2f}"]
        for g in groups:
            value = scores[g].get(task)
            row.append("-" if value is None else f"{value:.2f}")
            if value is not None:
                diffs.append((abs(value - base[task]), task, g))
                se = difference_se(base[task], counts[task], value, results["own"][g][task]["n"])
                beyond += abs(value - base[task]) > 2 * se + 1e-12
        rows.append(row)
    worst = max(diffs, key=lambda d: d[0], default=(float("nan"), None, None))  # first of ties, in task order
    summary = {"groups": groups, "n": len(diffs), "mean_abs_diff": mean(d for d, _, _ in diffs),
               "max_abs_diff": worst[0], "max_task": worst[1], "max_group": worst[2], "beyond_2se": int(beyond),
               "reference_mean": mean(base[t] for t in tasks),
               "control_mean": mean(scores[g][t] for g in groups for t in tasks if t in scores[g])}
    return ["task", reference] + groups, rows, summary


# ----------------------------------------------------------------------------- storage


def storage_summary(lora_aset, preset, vera_aset=None, dtype: str = "float16") -> dict:
    """Storage of keeping every adapter, LoRA factors vs VeRA vectors, in parameters and bytes.

    VeRA per module stores ``lambda_b`` (d_out) and ``lambda_d`` (r); its
    shared projections are regenerated from the PRNG key and not stored.
    Without a trained VeRA set, its counts are computed from the LoRA set's
    module shapes and ``preset.vera_rank`` (``vera_trained`` says which).
    Bytes are at ``dtype`` (the zoo stores half precision).
    """
    size = storage.bytes_per_param(dtype)
    shapes = storage.module_shapes(lora_aset)
    n = len(lora_aset.tasks)
    lora_one = storage.adapter_params(lora_aset, lora_aset.tasks[0])
    if vera_aset is not None:
        vera_one = storage.adapter_params(vera_aset, vera_aset.tasks[0])
        vera_rank = vera_aset.rank(vera_aset.tasks[0], vera_aset.modules[0])
    else:
        vera_rank = preset.vera_rank
        vera_one = sum(storage.vera_module_params(d_out, vera_rank) for d_out, _ in shapes.values())
    projections = vera_rank * (max(d for _, d in shapes.values()) + max(d for d, _ in shapes.values()))
    return {
        "n": n, "bytes_per_param": size, "vera_trained": vera_aset is not None, "vera_rank": vera_rank,
        "lora_one": lora_one, "lora_all": lora_one * n, "vera_one": vera_one, "vera_all": vera_one * n,
        "vera_projections": projections, "modules": len(shapes),
    }


def storage_rows(summary: Mapping) -> list[list[str]]:
    """Table rows (what, parameters, MB) of :func:`storage_summary`."""
    size, n = summary["bytes_per_param"], summary["n"]
    vera = f"VeRA (r = {summary['vera_rank']})" + ("" if summary["vera_trained"] else ", computed from shapes")
    entries = [
        ("LoRA, one adapter", summary["lora_one"]),
        (f"LoRA, all {n} adapters", summary["lora_all"]),
        (f"{vera}, one adapter", summary["vera_one"]),
        (f"{vera}, all {n} adapters", summary["vera_all"]),
        ("VeRA shared projections (regenerated from the key, not stored)", summary["vera_projections"]),
    ]
    return [[label, f"{params:,}", f"{params * size / MB:.3f}"] for label, params in entries]


def first_examples(preset, language: str | None = None) -> list:
    """The first test example of every application in one language (default: the preset's first)."""
    from .tasks import make_task

    language = language or preset.languages[0]
    return [make_task(f"{a}-{language}", preset.seed, n_train=0, n_validation=0, n_test=1).test[0]
            for a in preset.applications]

