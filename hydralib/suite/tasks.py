"""The multilingual task suite: 5 applications x 8 languages = 40 tasks, generated offline.

A task is named ``"{application}-{language}"`` (see :attr:`hydralib.presets.Preset.tasks`),
e.g. ``"tone_adjustment-de"``. The applications mirror those of the HydraOpt paper
(grammar correction, question answering, smart reply, summarisation, tone
adjustment) in spirit; its datasets are not public, so each application is
rebuilt here as a rule-and-template mapping over real multilingual data from
PyPI packages (babel/CLDR dates, times, weekday, language and city names in
every locale; faker's localised person names; num2words). The generators and
the mapping of each application are described in :mod:`hydralib.suite.generators`;
:func:`describe_suite` gives one example per task.

Languages: the paper's eight (en, de, es, fr, it, ja, ko, zh; zh is simplified
Chinese, zh_CN) are all available in the package data, so no language is
substituted. Where a package lacks data for one language, a documented
stand-in is used; :data:`SUBSTITUTIONS` lists every such case.

Splits are seeded and disjoint: examples are drawn from one stream seeded by
``(seed, task)``, duplicates of a prompt are skipped, and the first
``n_test`` unique prompts form the test split, the next ``n_validation`` the
validation split and the rest the training split. So the test split of a seed
does not change with ``n_train``.

Prompt format. Each example holds the user's text (an instruction line in the
task's language, a newline, then the input) and the answer. For a model, the
prompt is rendered with the tokenizer's chat template as one user turn after
an empty system turn (:func:`format_prompt`): SmolLM2's template otherwise
inserts a 16-token default system message, and every token costs CPU time.
For SmolLM2 this gives::

    <|im_start|>system
    <|im_end|>
    <|im_start|>user
    Fix the error:
    Anna Smith live in Paris and speaks German.<|im_end|>
    <|im_start|>assistant
    live → lives<|im_end|>

The answer is followed by the tokenizer's end-of-sequence token (``<|im_end|>``
for SmolLM2, which is also its end of turn). A tokenizer without a chat
template gets the plain form ``"### Input\\n{prompt}\\n### Output\\n"``.
The output formats (an edit ``wrong → right``, a bare field, a templated
reply, a fixed headline layout, a formal rewrite) are ones a base model cannot
guess, so its zero-shot exact match stays low and adapters have something to learn.

Example
-------
>>> splits = make_task("smart_reply-fr", seed=0, n_train=4, n_validation=2, n_test=2)
>>> len(splits.train), len(splits.validation), len(splits.test)
(4, 2, 2)
>>> splits.test[0].task
'smart_reply-fr'
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from hydralib.presets import APPLICATIONS, LANGUAGES
from hydralib.suite import generators

SYSTEM_PROMPT = ""
PLAIN_TEMPLATE = "### Input\n{prompt}\n### Output\n"

# Every place where the data of one language is not what the others use.
SUBSTITUTIONS: dict[str, str] = {
    "grammar_correction-ja": "Japanese has no letter case: the orthography error is ASCII punctuation ('.' or ',') "
    "in place of full-width 。 or 、.",
    "grammar_correction-zh": "Chinese has no letter case: the orthography error is ASCII punctuation ('.' or ',') "
    "in place of full-width 。 or ，; form errors are homophone characters (在/再, 的/地/得), the usual "
    "error type of Chinese spelling check.",
    "grammar_correction-ko": "Korean has no letter case: the orthography error is a missing space between two "
    "words (띄어쓰기).",
    "summarisation-ko": "num2words writes Sino-Korean words (사십이), which Korean does not use for counting "
    "people: the filler number is written in digits (42명).",
    "summarisation-zh": "num2words has no Chinese: the filler number (20-99) is written with num2words' Japanese "
    "kanji numerals, which are identical in Chinese for this range (四十二).",
    "*-fr": "French first names that start with a vowel or h are left out of faker's list, because 'de' before "
    "them must elide (d'Anne); cities that start with an article (Le Caire) are left out for the same reason.",
    "*-es, *-it": "cities that start with an article (El Cairo, Il Cairo) are left out so that 'en/a {city}' "
    "needs no contraction; in Italian the days 8 and 11 (l'8, l'11) and, in every language, the 1st "
    "(French 1er) are never drawn.",
}


@dataclass(frozen=True)
class Example:
    """One example: ``prompt`` is the user's text (instruction line + input), ``answer`` the exact output."""

    prompt: str
    answer: str
    task: str = ""


@dataclass(frozen=True)
class TaskSplits:
    """Seeded, disjoint train / validation / test examples of one task."""

    task: str
    seed: int
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]

    def __getitem__(self, split: str) -> tuple[Example, ...]:
        if split not in ("train", "validation", "test"):
            raise KeyError(f"hydralib.suite.tasks: no split {split!r}; use train, validation or test")
        return getattr(self, split)


def parse_task(task_name: str) -> tuple[str, str]:
    """``"smart_reply-fr"`` -> ``("smart_reply", "fr")``, with a clear error for unknown names."""
    application, sep, language = task_name.rpartition("-")
    if not sep or application not in APPLICATIONS or language not in LANGUAGES:
        raise ValueError(
            f"hydralib.suite.tasks: unknown task {task_name!r}; tasks are '{{application}}-{{language}}' with "
            f"application in {list(APPLICATIONS)} and language in {list(LANGUAGES)}"
        )
    return application, language


def task_names(applications=APPLICATIONS, languages=LANGUAGES) -> tuple[str, ...]:
    """All task names, application-major (the order of :attr:`Preset.tasks`)."""
    return tuple(f"{a}-{l}" for a in applications for l in languages)


def _rng(seed: int, task_name: str) -> random.Random:
    digest = hashlib.sha256(f"hydralib-suite:{seed}:{task_name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate_examples(task_name: str, seed: int, n: int) -> list[Example]:
    """The first ``n`` examples with distinct prompts of the task's seeded stream."""
    application, language = parse_task(task_name)
    make = generators.GENERATORS[application]
    rng = _rng(seed, task_name)
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(
                f"hydralib.suite.tasks: {task_name} produced only {len(out)} distinct prompts in {attempts} draws; "
                f"ask for fewer than {n}"
            )
        prompt, answer = make(rng, language)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(Example(prompt=prompt, answer=answer, task=task_name))
    return out


def make_task(task_name: str, seed: int = 0, n_train: int = 1600, n_validation: int = 100, n_test: int = 200) -> TaskSplits:
    """Seeded train / validation / test splits of one task, with no prompt in two splits.

    Deterministic: the same arguments give the same examples, on any machine
    (the generators use only a :class:`random.Random` seeded from a SHA-256 of
    ``(seed, task_name)`` and pinned package data).
    """
    for name, value in (("n_train", n_train), ("n_validation", n_validation), ("n_test", n_test)):
        if value < 0:
            raise ValueError(f"hydralib.suite.tasks: {name} must be >= 0, got {value}")
    examples = generate_examples(task_name, seed, n_test + n_validation + n_train)
    return TaskSplits(
        task=task_name,
        seed=seed,
        test=tuple(examples[:n_test]),
        validation=tuple(examples[n_test : n_test + n_validation]),
        train=tuple(examples[n_test + n_validation :]),
    )


def preset_task(preset, task_name: str, seed: int | None = None) -> TaskSplits:
    """Splits of one task with a preset's sizes and seed (``seed`` overrides the preset's)."""
    seed = preset.seed if seed is None else seed
    return make_task(task_name, seed, preset.n_train, preset.n_validation, preset.n_test)


def make_suite(preset, seed: int | None = None) -> dict[str, TaskSplits]:
    """Splits of every task of a preset, with the preset's sizes and seed."""
    return {task: preset_task(preset, task, seed) for task in preset.tasks}


def describe_suite(seed: int = 0, tasks=None) -> list[dict[str, str]]:
    """One test example per task, as rows ``{task, application, language, prompt, answer}`` for the book."""
    rows = []
    for task in tasks or task_names():
        application, language = parse_task(task)
        example = make_task(task, seed, n_train=0, n_validation=0, n_test=1).test[0]
        rows.append(
            {"task": task, "application": application, "language": language,
             "prompt": example.prompt, "answer": example.answer}
        )  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- rendering for a model


def format_prompt(prompt: str, tokenizer) -> str:
    """The text a model sees before the answer: the chat template (empty system turn, one user turn) or the plain form."""
    if getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (TemplateError, ValueError):  # templates that refuse a system role
            return tokenizer.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False)
    return PLAIN_TEMPLATE.format(prompt=prompt)


def format_answer(answer: str, tokenizer) -> str:
    """The answer as the model must produce it: the text, then the end-of-sequence token."""
    return answer + (tokenizer.eos_token or "")


def encode_example(example: Example, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt token ids, answer token ids ending with EOS), tokenised separately so the boundary is fixed."""
    prompt_ids = tokenizer(format_prompt(example.prompt, tokenizer), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(format_answer(example.answer, tokenizer), add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(answer_ids)
