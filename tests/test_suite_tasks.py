"""The multilingual task suite: determinism, disjoint splits, language and script, prompt format."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("babel")
pytest.importorskip("faker")
pytest.importorskip("num2words")

from hydralib.presets import APPLICATIONS, LANGUAGES, get_preset
from hydralib.suite import generators
from hydralib.suite.tasks import (
    PLAIN_TEMPLATE,
    SUBSTITUTIONS,
    Example,
    describe_suite,
    encode_example,
    format_prompt,
    make_suite,
    make_task,
    parse_task,
    task_names,
)

ALL_TASKS = task_names()
HANGUL = generators.SCRIPT_PATTERNS["hangul"]
KANA = generators.SCRIPT_PATTERNS["kana"]
HAN = generators.SCRIPT_PATTERNS["han"]
LATIN = generators.SCRIPT_PATTERNS["latin_letter"]


@pytest.fixture(scope="module")
def samples():
    """60 examples of every task (seed 0)."""
    return {task: make_task(task, seed=0, n_train=40, n_validation=10, n_test=10) for task in ALL_TASKS}


def _all(splits):
    return splits.train + splits.validation + splits.test


def test_forty_tasks_in_preset_order():
    assert len(ALL_TASKS) == 40
    assert ALL_TASKS == get_preset("default").tasks
    assert parse_task("tone_adjustment-de") == ("tone_adjustment", "de")
    for bad in ("tone_adjustment", "tone-de", "smart_reply-pt", "-en"):
        with pytest.raises(ValueError, match="unknown task"):
            parse_task(bad)


def test_same_seed_same_examples_other_seed_other_examples():
    for task in ("grammar_correction-ko", "summarisation-fr", "question_answering-zh"):
        a = make_task(task, seed=3, n_train=30, n_validation=5, n_test=5)
        b = make_task(task, seed=3, n_train=30, n_validation=5, n_test=5)
        c = make_task(task, seed=4, n_train=30, n_validation=5, n_test=5)
        assert a == b
        assert [e.prompt for e in a.test] != [e.prompt for e in c.test]


def test_test_split_does_not_depend_on_train_size():
    small = make_task("smart_reply-ja", seed=0, n_train=5, n_validation=5, n_test=20)
    large = make_task("smart_reply-ja", seed=0, n_train=200, n_validation=5, n_test=20)
    assert small.test == large.test and small.validation == large.validation
    assert large.train[:5] == small.train


def test_splits_have_the_sizes_asked_and_no_shared_prompt(samples):
    for task, s in samples.items():
        assert (len(s.train), len(s.validation), len(s.test)) == (40, 10, 10)
        prompts = [e.prompt for e in _all(s)]
        assert len(set(prompts)) == len(prompts), task
        assert not {e.prompt for e in s.train} & {e.prompt for e in s.test}
        assert s["test"] is s.test
    with pytest.raises(KeyError):
        samples[ALL_TASKS[0]]["dev"]


def test_full_size_splits_are_disjoint():
    """The default preset's sizes on the tasks with the smallest input space."""
    preset = get_preset("default")
    for task in ("tone_adjustment-en", "smart_reply-ja", "tone_adjustment-zh"):
        s = make_task(task, 0, preset.n_train, preset.n_validation, preset.n_test)
        train, val, test = ({e.prompt for e in part} for part in (s.train, s.validation, s.test))
        assert (len(train), len(val), len(test)) == (preset.n_train, preset.n_validation, preset.n_test)
        assert not (train & val or train & test or val & test)


def test_examples_are_valid_and_in_their_language(samples):
    for task, s in samples.items():
        application, lang = parse_task(task)
        instruction = generators.INSTRUCTIONS[application][lang]
        for e in _all(s):
            assert isinstance(e, Example) and e.task == task
            assert e.prompt.startswith(instruction + "\n"), (task, e.prompt)
            body = e.prompt[len(instruction) + 1 :]
            assert body.strip() and e.answer.strip() and e.answer == e.answer.strip(), (task, e)
            assert "{" not in e.prompt + e.answer and "\u202f" not in e.prompt + e.answer, (task, e)
            assert len(e.prompt) < 200 and len(e.answer) < 80, (task, e)
            text = e.prompt + "\n" + e.answer
            if lang == "ko":
                assert HANGUL.search(body) and HANGUL.search(e.answer) and not KANA.search(text), (task, e)
            elif lang == "ja":
                assert KANA.search(body) and not HANGUL.search(text), (task, e)
            elif lang == "zh":
                assert HAN.search(body) and not (KANA.search(text) or HANGUL.search(text)), (task, e)
                if application != "grammar_correction":  # an edit may be ". → 。"
                    assert HAN.search(e.answer) or re.search(r"\d", e.answer), (task, e)
            else:
                assert not (HAN.search(text) or KANA.search(text) or HANGUL.search(text)), (task, e)
                assert LATIN.search(e.answer), (task, e)


def test_each_language_answers_in_its_own_words(samples):
    """Language variants of one application share (almost) no answer: the output language differs."""
    for application in APPLICATIONS:
        answers = {lang: {e.answer for e in _all(samples[f"{application}-{lang}"])} for lang in LANGUAGES}
        for i, a in enumerate(LANGUAGES):
            for b in LANGUAGES[i + 1 :]:
                shared = answers[a] & answers[b]
                # QA may answer with a city spelled alike in two languages (Nairobi)
                assert len(shared) <= (6 if application == "question_answering" else 1), (application, a, b, shared)


def test_applications_are_different_mappings(samples):
    """Answers of different applications of one language never coincide, and their shapes differ."""
    for lang in LANGUAGES:
        per_app = {a: {e.answer for e in _all(samples[f"{a}-{lang}"])} for a in APPLICATIONS}
        for i, a in enumerate(APPLICATIONS):
            for b in APPLICATIONS[i + 1 :]:
                assert not per_app[a] & per_app[b], (lang, a, b)
        assert all(generators.ARROW in x for x in per_app["grammar_correction"])
        for a in APPLICATIONS[1:]:
            assert not any(generators.ARROW in x for x in per_app[a])


def test_grammar_edit_points_at_the_input(samples):
    for lang in LANGUAGES:
        for e in _all(samples[f"grammar_correction-{lang}"]):
            wrong, right = e.answer.split(generators.ARROW)
            sentence = e.prompt.split("\n", 1)[1]
            assert wrong in sentence and wrong != right, (lang, e)
            fixed = sentence.replace(wrong, right, 1)
            assert fixed != sentence


def test_question_answering_answers_from_the_record(samples):
    for lang in LANGUAGES:
        for e in _all(samples[f"question_answering-{lang}"]):
            record = e.prompt.split("\n")[1:-1]
            assert len(record) == generators.QA_PEOPLE
            # city and name answers are copied; birthday answers are rewritten from the numeric date
            copied = any(e.answer in line for line in record)
            month_words = generators._month_names(lang)
            is_birthday = any(m in e.answer for m in month_words) or re.fullmatch(r"\d+月\d+日|\d+월 \d+일", e.answer)
            assert copied or is_birthday, (lang, e)


def test_tone_adjustment_keeps_the_deadline(samples):
    for lang in LANGUAGES:
        for e in _all(samples[f"tone_adjustment-{lang}"]):
            body = e.prompt.split("\n", 1)[1]
            assert body != e.answer
            # the deadline (weekday, date or time) is carried over verbatim
            assert any(w in body and w in e.answer for w in generators._weekdays(lang)) or re.search(
                r"\d", e.answer
            ), (lang, e)


def test_describe_suite_one_example_per_task():
    rows = describe_suite()
    assert [r["task"] for r in rows] == list(ALL_TASKS)
    assert all(r["prompt"] and r["answer"] for r in rows)
    assert {r["application"] for r in rows} == set(APPLICATIONS)
    assert describe_suite(tasks=["smart_reply-it"])[0] == rows[ALL_TASKS.index("smart_reply-it")]


def test_make_suite_uses_preset_sizes():
    preset = get_preset("tiny")
    suite = make_suite(preset)
    assert tuple(suite) == preset.tasks
    s = next(iter(suite.values()))
    assert (len(s.train), len(s.validation), len(s.test)) == (preset.n_train, preset.n_validation, preset.n_test)


def test_substitutions_name_real_tasks():
    for key in SUBSTITUTIONS:
        for part in key.split(", "):
            application, _, lang = part.rpartition("-")
            assert lang in LANGUAGES and (application == "*" or application in APPLICATIONS), key


def test_negative_sizes_are_refused():
    with pytest.raises(ValueError, match="n_test"):
        make_task("smart_reply-en", n_test=-1)


# ----------------------------------------------------------------------------- prompt format


def test_prompt_format_with_chat_template():
    from hydralib.suite.models import build_byte_tokenizer

    tok = build_byte_tokenizer()
    e = Example("Fix the error:\nAnna live in Rome.", "live → lives", "grammar_correction-en")
    text = format_prompt(e.prompt, tok)
    assert text == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nFix the error:\nAnna live in Rome.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    prompt_ids, answer_ids = encode_example(e, tok)
    assert answer_ids[-1] == tok.eos_token_id
    assert tok.decode(prompt_ids + answer_ids) == text + "live → lives<|im_end|>"


def test_prompt_format_without_chat_template():
    from hydralib.suite.models import build_byte_tokenizer

    tok = build_byte_tokenizer()
    tok.chat_template = None
    assert format_prompt("Q", tok) == PLAIN_TEMPLATE.format(prompt="Q") == "### Input\nQ\n### Output\n"


def test_prompt_format_falls_back_when_the_template_refuses_a_system_turn():
    from hydralib.suite.models import build_byte_tokenizer

    tok = build_byte_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['content'] }}]{% endfor %}"
    )
    assert format_prompt("Q", tok) == "[Q]"
