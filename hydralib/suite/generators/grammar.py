"""Application ``grammar_correction``: one error put into a template sentence; the answer is the edit ``"wrong → right"``.

See :mod:`hydralib.suite.generators` for the whole suite.
"""

from __future__ import annotations

import random

from .words import (
    ARROW,
    CJK,
    _language_names,
    _month_names,
    _prompt,
    _weekdays,
    city,
    date,
    fmt_date,
    person,
)

# A template is a list of segments; "a|b|c" offers the correct form a and wrong forms b, c.
# "{slot}" is filled per example. Punctuation segments attach to the previous word.
GRAMMAR_TEMPLATES = {
    "en": [
        ["{name}", "lives|live|living", "in", "{city}", "and", "speaks|speak|speaking", "{language}"],
        ["On|In|At", "{weekday}", ",", "{name}", "flies|fly|flied", "to", "{city}"],
        ["{name}", "was|were|be", "born", "on|in|at", "{md}"],
    ],
    "de": [
        ["{name}", "wohnt|wohnen|wohnst", "in", "{city}", "und", "spricht|sprechen|sprichst", "{language}"],
        ["Am|Im|Um", "{weekday}", "fliegt|fliegen|fliegst", "{name}", "nach", "{city}"],
        ["{name}", "hat|haben|hast", "am", "{md}", "Geburtstag"],
    ],
    "es": [
        ["{name}", "vive|viven|vives", "en", "{city}", "y", "habla|hablan|hablas", "{language}"],
        ["El|La|Las", "{weekday}", "{name}", "vuela|vuelan|vuelas", "a", "{city}"],
        ["El", "cumpleaños", "de", "{name}", "es|son|eres", "el", "{md}"],
    ],
    "fr": [
        ["{name}", "habite|habitent|habites", "à", "{city}", "et", "parle|parlent|parles", "{language}"],
        ["Ce|Cette|Ces", "{weekday}", ",", "{name}", "part|partent|pars", "pour", "{city}"],
        ["L'anniversaire", "de", "{name}", "est|sont|es", "le", "{md}"],
    ],
    "it": [
        ["{name}", "abita|abitano|abiti", "a", "{city}", "e", "parla|parlano|parli", "{language}"],
        ["{name}", "parte|partono|parti", "per", "{city}", "{weekday}"],
        ["Il", "compleanno", "di", "{name}", "è|sono|sei", "il", "{md}"],
    ],
    "ja": [
        ["{name}さん", "は|を|に", "{city}", "に|を|で", "住んでいて", "、", "{language}", "を|に|が", "話します"],
        ["{weekday}", "に|を|が", "{name}さん", "は|を|に", "{city}", "へ|を|が", "行きます"],
        ["{name}さん", "の|が|を", "誕生日", "は|を|に", "{md}", "です|ます"],
    ],
    "ko": [
        ["{name}", "씨는|씨를|씨에", "{city}에|{city}를|{city}가", "살고", "{language}를|{language}에|{language}가",
         "합니다"],
        ["{weekday}에|{weekday}를|{weekday}가", "{name}", "씨는|씨를|씨에", "{city}에|{city}를|{city}가", "갑니다"],
        ["{name}", "씨의|씨를|씨에", "생일은|생일을|생일에", "{md}입니다|{md}습니다|{md}합니다"],
    ],
    "zh": [
        ["{name}", "在|再", "{city}", "工作", "，", "会|回", "说", "{language}"],
        ["{name}", "{weekday}", "要|药", "去", "{city}", "旅行|旅型"],
        ["{name}", "的|地|得", "生日", "是|事|时", "{md}"],
    ],
}  # fmt: skip
_PUNCT = {",", "，", "、", ".", "。"}
_END = {"ja": "。", "zh": "。"}
_ASCII_PUNCT = {"。": ".", "、": ",", "，": ","}
GRAMMAR_ERRORS = ("form", "swap", "duplicate", "orthography")
GRAMMAR_ERROR_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


def _join(segments: list[str], lang: str) -> str:
    if lang in CJK:
        return "".join(segments)
    out = ""
    for seg in segments:
        out += seg if (not out or seg in _PUNCT) else " " + seg
    return out


def grammar_correction(rng: random.Random, lang: str) -> tuple[str, str]:
    template = rng.choice(GRAMMAR_TEMPLATES[lang])
    d = date(rng)
    slots = {
        "name": person(rng, lang).full,
        "city": city(rng, lang),
        "language": rng.choice(_language_names(lang)),
        "weekday": rng.choice(_weekdays(lang)),
        "md": fmt_date(d, "MMMMd", lang),
    }
    options = [[alt.format(**slots) for alt in seg.split("|")] for seg in template]
    correct = [opts[0] for opts in options]
    end = _END.get(lang, ".")

    def sentence(segments):
        return _join(segments, lang) + end

    while True:
        kind = rng.choices(GRAMMAR_ERRORS, GRAMMAR_ERROR_WEIGHTS)[0]
        wrong = list(correct)
        if kind == "form":
            i = rng.choice([i for i, o in enumerate(options) if len(o) > 1])
            wrong[i] = rng.choice(options[i][1:])
            edit = (wrong[i], correct[i])
        elif kind == "swap":
            pairs = [i for i in range(len(correct) - 1) if not {correct[i], correct[i + 1]} & _PUNCT]
            i = rng.choice(pairs)
            wrong[i], wrong[i + 1] = correct[i + 1], correct[i]
            edit = (_join(wrong[i : i + 2], lang), _join(correct[i : i + 2], lang))
        elif kind == "duplicate":
            words = [i for i, s in enumerate(template) if "{" not in s and correct[i] not in _PUNCT]
            i = rng.choice(words)
            wrong.insert(i + 1, correct[i])
            edit = (_join([correct[i], correct[i]], lang), correct[i])
        else:  # orthography: letter case (Latin), full-width punctuation (ja, zh), spacing (ko)
            if lang in CJK:
                marks = [i for i, s in enumerate(correct) if s in _ASCII_PUNCT]
                if rng.random() < 0.5 or not marks:
                    return _prompt("grammar_correction", lang, sentence(correct)[:-1] + "."), f".{ARROW}。"
                i = rng.choice(marks)
                wrong[i] = _ASCII_PUNCT[correct[i]]
                edit = (wrong[i], correct[i])
            elif lang == "ko":  # not before 씨, which is often written attached
                i = rng.choice([i for i in range(len(correct) - 1) if not correct[i + 1].startswith("씨")])
                wrong[i : i + 2] = [correct[i] + correct[i + 1]]
                edit = (wrong[i], f"{correct[i]} {correct[i + 1]}")
            else:
                edit = _case_error(rng, lang, template, correct, wrong, slots, d)
                if edit is None:
                    continue
        if wrong != correct and edit[0] != edit[1]:
            return _prompt("grammar_correction", lang, sentence(wrong)), ARROW.join(edit)


def _case_error(rng, lang, template, correct, wrong, slots, d):
    """Flip the letter case of a CLDR month, weekday or language name (capitalised in en/de only)."""
    candidates = []
    for i, seg in enumerate(template):
        if i == 0:
            continue  # sentence-initial words are capitalised anyway
        if seg == "{md}":
            candidates.append((i, _month_names(lang)[d.month - 1]))
        elif seg in ("{weekday}", "{language}"):
            candidates.append((i, slots[seg[1:-1]]))
    candidates = [(i, w) for i, w in candidates if " " not in w and w[:1].isalpha()]
    if not candidates:
        return None
    i, word = rng.choice(candidates)
    flipped = word[0].swapcase() + word[1:]
    if flipped == word:
        return None
    wrong[i] = correct[i].replace(word, flipped, 1)
    return flipped, word
