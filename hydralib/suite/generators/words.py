"""The shared vocabulary of the task suite's generators: locales, words from package data, sampling helpers, instructions.

The words come from data that PyPI packages carry (babel / CLDR dates, times,
weekday, month, language and city names; faker's localised person names;
num2words' number words); only closed-class glue words are written by hand,
in the application modules. Every sampling helper takes the
:class:`random.Random` of the example, so a task is a pure function of its seed.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import random
import re
from dataclasses import dataclass
from functools import cache

# ----------------------------------------------------------------------------- locales

BABEL_LOCALES = {"en": "en", "de": "de", "es": "es", "fr": "fr", "it": "it", "ja": "ja", "ko": "ko", "zh": "zh"}
FAKER_LOCALES = {
    "en": "en_US",
    "de": "de_DE",
    "es": "es_ES",
    "fr": "fr_FR",
    "it": "it_IT",
    "ja": "ja_JP",
    "ko": "ko_KR",
    "zh": "zh_CN",
}
CJK = ("ja", "zh")  # written without spaces between words
ARROW = " → "

# ISO 639-1 codes whose CLDR names are used as the "language" slot (the same set in every language).
LANGUAGE_CODES = (
    "ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hu", "id", "it",
    "ja", "ko", "nl", "no", "pl", "pt", "ro", "ru", "sv", "sw", "th", "tr", "uk", "vi", "zh",
)  # fmt: skip

# Days of the month that need no special article or ordinal anywhere (fr "1er", it "l'8", "l'11").
DAYS = tuple(d for d in range(2, 29) if d not in (8, 11))
YEARS = (2023, 2024, 2025, 2026)
HOURS = tuple(range(8, 21))
MINUTES = (0, 15, 30, 45)

_ARTICLE_START = {
    "es": ("El ", "La ", "Los ", "Las "),
    "fr": ("Le ", "La ", "Les ", "L’", "L'"),
    "it": ("Il ", "La ", "Lo ", "Le ", "L’", "L'", "I ", "Gli "),
}


def _clean(text: str) -> str:
    """Normalise CLDR's narrow and no-break spaces to plain spaces."""
    return text.replace("\u202f", " ").replace("\u00a0", " ")


# ----------------------------------------------------------------------------- package data


@cache
def _person_names(lang: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(first names, family names) of faker's person provider for the language, filtered and sorted."""
    provider = importlib.import_module(f"faker.providers.person.{FAKER_LOCALES[lang]}").Provider

    def pick(*attributes):
        names = set()
        for attribute in attributes:
            names.update(getattr(provider, attribute, ()) or ())
        keep = {n for n in names if n.isalpha() and 1 <= len(n) <= 12}
        if lang == "fr":  # "de Anne" must elide to "d'Anne": keep names that do not elide
            keep = {n for n in keep if n[0].lower() not in "aeiouyhàâéèêëîïôöûü"}
        return tuple(sorted(keep))

    first = pick("first_names_female", "first_names_male", "first_names")
    last = pick("last_names")
    if lang == "ko":
        last = tuple(n for n in last if len(n) == 1)  # one-syllable family names: "민수 씨" drops it
    if lang == "zh":
        last = tuple(n for n in last if len(n) == 1)
    return first, last


@cache
def _city_names() -> dict[str, tuple[str, ...]]:
    """CLDR exemplar cities of time zones, localised; only zones usable in all 8 languages (parallel lists)."""
    from babel import Locale
    from babel.dates import get_timezone_location

    regions = ("Africa/", "America/", "Asia/", "Atlantic/", "Australia/", "Europe/", "Indian/", "Pacific/")
    zones = sorted(z for z in Locale.parse("zh").time_zones if z.startswith(regions))  # no Etc/UTC, Antarctica
    table = {lang: [] for lang in BABEL_LOCALES}
    for zone in zones:
        names = {}
        for lang, locale in BABEL_LOCALES.items():
            try:
                name = _clean(get_timezone_location(zone, locale=locale, return_city=True))
            except LookupError:  # zone unknown to the time-zone database
                break
            words = name.split(" ")
            if not all(w.isalpha() for w in words) or len(words) > 2:
                break
            if lang in ("ja", "zh", "ko"):
                if len(name.replace(" ", "")) > 6:
                    break
            elif len(name) > 14 or name.startswith(_ARTICLE_START.get(lang, ("\0",))):
                break
            names[lang] = name
        else:
            for lang, name in names.items():
                table[lang].append(name)
    return {lang: tuple(v) for lang, v in table.items()}


@cache
def _language_names(lang: str) -> tuple[str, ...]:
    from babel import Locale

    names = Locale.parse(BABEL_LOCALES[lang]).languages
    return tuple(_clean(names[code]) for code in LANGUAGE_CODES)


@cache
def _weekdays(lang: str) -> tuple[str, ...]:
    from babel import Locale

    days = Locale.parse(BABEL_LOCALES[lang]).days["format"]["wide"]
    return tuple(_clean(days[i]) for i in range(7))


@cache
def _month_names(lang: str) -> tuple[str, ...]:
    from babel import Locale

    months = Locale.parse(BABEL_LOCALES[lang]).months["format"]["wide"]
    return tuple(_clean(months[i]) for i in range(1, 13))


def fmt_date(date: _dt.date, skeleton: str, lang: str) -> str:
    """CLDR date by skeleton: ``"MMMMd"`` 12. März, ``"Md"`` 12.3., ``"yMMMMd"`` 12. März 2024, ``"yMd"`` 12.3.2024."""
    from babel.dates import format_skeleton

    return _clean(format_skeleton(skeleton, date, locale=BABEL_LOCALES[lang]))


def fmt_time(time: _dt.time, lang: str) -> str:
    from babel.dates import format_time

    return _clean(format_time(time, "short", locale=BABEL_LOCALES[lang]))


def number_words(n: int, lang: str) -> str:
    """``n`` in words (num2words); ko uses digits and zh the kanji numerals of num2words' ja (see SUBSTITUTIONS)."""
    from num2words import num2words

    if lang == "ko":
        return str(n)
    return num2words(n, lang="ja" if lang == "zh" else lang)


# ----------------------------------------------------------------------------- sampling helpers


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    lang: str

    @property
    def full(self) -> str:
        if self.lang == "ja":
            return f"{self.last} {self.first}"
        if self.lang in ("ko", "zh"):
            return f"{self.last}{self.first}"
        return f"{self.first} {self.last}"

    @property
    def address(self) -> str:
        """How a reply addresses this person: first name; 佐藤さん; 민수 씨; full name in zh."""
        return {"ja": f"{self.last}さん", "ko": f"{self.first} 씨", "zh": self.full}.get(self.lang, self.first)


def person(rng: random.Random, lang: str) -> Person:
    first, last = _person_names(lang)
    return Person(rng.choice(first), rng.choice(last), lang)


def people(rng: random.Random, lang: str, k: int) -> list[Person]:
    out: list[Person] = []
    while len(out) < k:
        p = person(rng, lang)
        if all(p.full != q.full and p.first != q.first for q in out):
            out.append(p)
    return out


def city(rng: random.Random, lang: str) -> str:
    return rng.choice(_city_names()[lang])


def date(rng: random.Random) -> _dt.date:
    return _dt.date(rng.choice(YEARS), rng.randint(1, 12), rng.choice(DAYS))


def time(rng: random.Random) -> _dt.time:
    return _dt.time(rng.choice(HOURS), rng.choice(MINUTES))


# ----------------------------------------------------------------------------- instructions

INSTRUCTIONS = {
    "grammar_correction": {
        "en": "Fix the error:", "de": "Korrigiere den Fehler:", "es": "Corrige el error:",
        "fr": "Corrige l'erreur :", "it": "Correggi l'errore:", "ja": "誤りを直して：",
        "ko": "교정:", "zh": "改错：",
    },
    "question_answering": {
        "en": "Answer the question:", "de": "Beantworte die Frage:", "es": "Responde a la pregunta:",
        "fr": "Réponds à la question :", "it": "Rispondi alla domanda:", "ja": "質問に答えて：",
        "ko": "답하세요:", "zh": "请回答：",
    },
    "smart_reply": {
        "en": "Reply briefly:", "de": "Antworte kurz:", "es": "Responde brevemente:",
        "fr": "Réponds brièvement :", "it": "Rispondi brevemente:", "ja": "短く返信：",
        "ko": "답장:", "zh": "简短回复：",
    },
    "summarisation": {
        "en": "Write a headline:", "de": "Schreibe eine Schlagzeile:", "es": "Escribe un titular:",
        "fr": "Écris un titre :", "it": "Scrivi un titolo:", "ja": "見出し：",
        "ko": "제목:", "zh": "写标题：",
    },
    "tone_adjustment": {
        "en": "Make it formal:", "de": "Formuliere es höflich:", "es": "Hazlo formal:",
        "fr": "Rends-le formel :", "it": "Rendilo formale:", "ja": "丁寧に：",
        "ko": "존댓말로:", "zh": "礼貌地说：",
    },
}  # fmt: skip


def _prompt(application: str, lang: str, body: str) -> str:
    return f"{INSTRUCTIONS[application][lang]}\n{body}"


# Characters by script, for checks that an example is in its language.
SCRIPT_PATTERNS = {
    "hangul": re.compile(r"[\uac00-\ud7a3]"),
    "kana": re.compile(r"[\u3040-\u30ff]"),
    "han": re.compile(r"[\u4e00-\u9fff]"),
    "latin_letter": re.compile(r"[A-Za-zÀ-ÿ]"),
}
