"""Example generators of the task suite: 5 applications x 8 languages, built from package data.

Every generator is a function ``(rng, lang) -> (prompt, answer)``. Its randomness
comes only from the :class:`random.Random` it is given, so a task is a pure
function of its seed. The words come from data that PyPI packages carry:

* **babel / CLDR**: dates (``MMMMd`` "12. März", numeric ``Md`` "12.3.",
  long and numeric dates with year), times ("14:30", "오후 2:30"), weekday
  names, language names, and city names (the exemplar cities of CLDR's time
  zones, localised in every language, e.g. "Kairo", "El Cairo", "カイロ");
* **faker**: localised first and family names (``faker.providers.person.<locale>``);
* **num2words**: number words in the filler sentences of ``summarisation``.

Only the closed-class words that glue a sentence together (frames,
prepositions, verb forms, a few nouns) are written here by hand, per language;
an answer follows from its prompt by rules and templates, never from facts the
prompt does not contain (see the book's chapter *The adapter zoo*, section *The task suite*).

The five applications and the mapping each one asks for (one example each is
printed by :func:`hydralib.suite.tasks.describe_suite`):

``grammar_correction``
    One error (wrong verb/particle/homophone form, two words swapped, a
    word doubled, or a language-specific slip: letter case of a CLDR
    month/weekday/language name in en/de/es/fr/it, ASCII instead of
    full-width punctuation in ja/zh, a missing space between words in ko)
    is put into a template sentence. The answer is the edit
    ``"wrong → right"`` (as in grammatical-error-correction edit annotations),
    e.g. ``"wohnen → wohnt"``.
``question_answering``
    A two-line list "name: city, birthday (numeric)" and a question of one
    of three kinds: where does X live (answer: the city), who lives in Y
    (the name), when is X's birthday (the birthday rewritten from numeric
    "12.3." to the CLDR month-name form "12. März").
``smart_reply``
    A message from a named sender: an invitation with weekday and time, a
    thank-you for a gift, or a running-late note with a time. The answer is
    the templated reply of that message kind, addressing the sender the way
    the language does (first name; 佐藤さん; 민수 씨; full name in zh) and
    repeating the weekday/time.
``summarisation``
    A two-sentence news item (long date with year, name, city, event,
    a filler sentence with a number in words). The answer is a fixed headline:
    city, numeric date, name and the event in headline form, the filler dropped
    ("Berlin, 12.3.2024: Anna Schmidt eröffnet Bäckerei").
``tone_adjustment``
    An informal request (du/tu/tú imperative, casual Japanese and Korean
    without particles, Chinese 你…吧) rewritten in the formal register
    (Sie/vous/usted/Lei modal question, ～ていただけますか, ～주시겠어요?,
    请您…，谢谢), keeping the deadline (weekday, date or time).

Every application is a different mapping (find-and-edit, select-and-copy,
classify-and-fill, compress-and-reformat, rewrite-whole-sentence), so an
adapter trained on one application is of little use on another, and every
language variant answers in its own language.
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


# ----------------------------------------------------------------------------- grammar_correction

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


# ----------------------------------------------------------------------------- question_answering

QA_FORMS = {
    # one line per person, questions (city of X, who lives in Y, birthday of X)
    "en": ("{name}: {city}, {md}",
           "Where does {name} live?", "Who lives in {city}?", "When is {name}'s birthday?"),
    "de": ("{name}: {city}, {md}",
           "Wo wohnt {name}?", "Wer wohnt in {city}?", "Wann hat {name} Geburtstag?"),
    "es": ("{name}: {city}, {md}",
           "¿Dónde vive {name}?", "¿Quién vive en {city}?", "¿Cuándo es el cumpleaños de {name}?"),
    "fr": ("{name} : {city}, {md}",
           "Où habite {name} ?", "Qui habite à {city} ?", "Quand est l'anniversaire de {name} ?"),
    "it": ("{name}: {city}, {md}",
           "Dove abita {name}?", "Chi abita a {city}?", "Quando è il compleanno di {name}?"),
    "ja": ("{name}：{city}、{md}",
           "{name}さんはどこに住んでいますか？", "{city}に住んでいるのは誰ですか？", "{name}さんの誕生日はいつですか？"),
    "ko": ("{name}: {city}, {md}",
           "{name} 씨는 어디에 살아요?", "{city}에 사는 사람은 누구예요?", "{name} 씨의 생일은 언제예요?"),
    "zh": ("{name}：{city}，{md}",
           "{name}住在哪里？", "谁住在{city}？", "{name}的生日是哪天？"),
}  # fmt: skip


QA_PEOPLE = 2


def question_answering(rng: random.Random, lang: str) -> tuple[str, str]:
    line, ask_city, ask_who, ask_birthday = QA_FORMS[lang]
    persons = people(rng, lang, QA_PEOPLE)
    cities: list[str] = []
    while len(cities) < QA_PEOPLE:
        c = city(rng, lang)
        if c not in cities:
            cities.append(c)
    dates: list[_dt.date] = []
    while len(dates) < QA_PEOPLE:
        d = date(rng)
        if all((d.month, d.day) != (e.month, e.day) for e in dates):
            dates.append(d)
    rows = [line.format(name=p.full, city=c, md=fmt_date(d, "Md", lang)) for p, c, d in zip(persons, cities, dates)]
    k = rng.randrange(QA_PEOPLE)
    kind = rng.randrange(3)
    if kind == 0:
        question, answer = ask_city.format(name=persons[k].full), cities[k]
    elif kind == 1:
        question, answer = ask_who.format(city=cities[k]), persons[k].full
    else:
        question, answer = ask_birthday.format(name=persons[k].full), fmt_date(dates[k], "MMMMd", lang)
    body = "\n".join([*rows, question])
    return _prompt("question_answering", lang, body), answer


# ----------------------------------------------------------------------------- smart_reply

SMART_REPLY = {
    # (invitation, reply), events, (thanks, reply), gifts, (late, reply)
    "en": (("{sender}: Are you coming to {event} on {weekday} at {time}?", "Sure, {to}! See you on {weekday} at {time}."),
           ("the party", "dinner", "the concert", "the meeting", "the game", "lunch"),
           ("{sender}: Thank you so much for the {gift}!", "You're welcome, {to}!"),
           ("flowers", "book", "cake", "tickets", "scarf", "photos"),
           ("{sender}: Sorry, I'm running late. I'll be there at {time}.", "No problem, {to}. See you at {time}!")),
    "de": (("{sender}: Kommst du am {weekday} um {time} {event}?", "Gern, {to}! Bis {weekday} um {time}."),
           ("zur Party", "zum Abendessen", "zum Konzert", "zum Treffen", "zum Spiel", "zum Mittagessen"),
           ("{sender}: Vielen Dank für {gift}!", "Gern geschehen, {to}!"),
           ("die Blumen", "das Buch", "den Kuchen", "die Karten", "den Schal", "die Fotos"),
           ("{sender}: Sorry, ich verspäte mich. Ich bin um {time} da.", "Kein Problem, {to}. Bis um {time}!")),
    "es": (("{sender}: ¿Vienes {event} el {weekday} a las {time}?", "¡Claro, {to}! Nos vemos el {weekday} a las {time}."),
           ("a la fiesta", "a la cena", "al concierto", "a la reunión", "al partido", "a la comida"),
           ("{sender}: ¡Muchas gracias por {gift}!", "¡De nada, {to}!"),
           ("las flores", "el libro", "el pastel", "las entradas", "la bufanda", "las fotos"),
           ("{sender}: Lo siento, llego tarde. Estaré allí a las {time}.", "No pasa nada, {to}. ¡Nos vemos a las {time}!")),
    "fr": (("{sender} : Tu viens {event} {weekday} à {time} ?", "Avec plaisir, {to} ! Rendez-vous {weekday} à {time}."),
           ("à la fête", "au dîner", "au concert", "à la réunion", "au match", "au déjeuner"),
           ("{sender} : Merci beaucoup pour {gift} !", "De rien, {to} !"),
           ("les fleurs", "le livre", "le gâteau", "les billets", "l'écharpe", "les photos"),
           ("{sender} : Désolé, je suis en retard. J'arrive à {time}.", "Pas de souci, {to}. Rendez-vous à {time} !")),
    "it": (("{sender}: Vieni {event} {weekday} alle {time}?", "Certo, {to}! Ci vediamo {weekday} alle {time}."),
           ("alla festa", "a cena", "al concerto", "alla riunione", "alla partita", "a pranzo"),
           ("{sender}: Grazie mille per {gift}!", "Prego, {to}!"),
           ("i fiori", "il libro", "la torta", "i biglietti", "la sciarpa", "le foto"),
           ("{sender}: Scusa, sono in ritardo. Arrivo alle {time}.", "Nessun problema, {to}. Ci vediamo alle {time}!")),
    "ja": (("{sender}：{weekday}の{time}から{event}があるけど、来る？", "はい、{weekday}の{time}に行きます！"),
           ("パーティー", "夕食会", "コンサート", "会議", "試合", "ランチ会"),
           ("{sender}：{gift}、本当にありがとう！", "どういたしまして、{to}！"),
           ("お花", "本", "ケーキ", "チケット", "マフラー", "写真"),
           ("{sender}：ごめん、遅れそう。{time}に着くね。", "大丈夫です、{to}。{time}に会いましょう！")),
    "ko": (("{sender}: {weekday} {time}에 {event}에 올 수 있어요?", "네, {weekday} {time}에 갈게요!"),
           ("파티", "저녁 식사", "콘서트", "회의", "경기", "점심 모임"),
           ("{sender}: {gift} 정말 고마워요!", "천만에요, {to}!"),
           ("꽃", "책", "케이크", "티켓", "목도리", "사진"),
           ("{sender}: 미안해요, 좀 늦을 것 같아요. {time}에 도착해요.", "괜찮아요, {to}. {time}에 봬요!")),
    "zh": (("{sender}：{weekday}{time}的{event}你来吗？", "好的，{to}！{weekday}{time}见。"),
           ("聚会", "晚饭", "音乐会", "会议", "比赛", "午饭"),
           ("{sender}：非常感谢你送的{gift}！", "不客气，{to}！"),
           ("花", "书", "蛋糕", "票", "围巾", "照片"),
           ("{sender}：不好意思，我要迟到了，{time}到。", "没关系，{to}，{time}见！")),
}  # fmt: skip


def smart_reply(rng: random.Random, lang: str) -> tuple[str, str]:
    invite, events, thanks, gifts, late = SMART_REPLY[lang]
    p = person(rng, lang)
    slots = {
        "sender": p.full,
        "to": p.address,
        "weekday": rng.choice(_weekdays(lang)),
        "time": fmt_time(time(rng), lang),
        "event": rng.choice(events),
        "gift": rng.choice(gifts),
    }
    message, reply = rng.choice((invite, thanks, late))
    return _prompt("smart_reply", lang, message.format(**slots)), reply.format(**slots)


# ----------------------------------------------------------------------------- summarisation

SUMMARY = {
    # story, headline, events (in the story, in the headline), fillers ({n}: a number in words)
    "en": ("On {long}, {name} from {city} {event}. {filler}", "{city}, {num}: {name} {headline}",
           (("opened a bakery", "opens bakery"), ("won the chess tournament", "wins chess tournament"),
            ("published a novel", "publishes novel"), ("founded a choir", "founds choir"),
            ("painted a mural", "paints mural"), ("won the city race", "wins city race")),
           ("About {n} people came to watch.", "The mayor sent congratulations.",
            "Friends celebrated late into the night.")),
    "de": ("Am {long} hat {name} aus {city} {event}. {filler}", "{city}, {num}: {name} {headline}",
           (("eine Bäckerei eröffnet", "eröffnet Bäckerei"), ("das Schachturnier gewonnen", "gewinnt Schachturnier"),
            ("einen Roman veröffentlicht", "veröffentlicht Roman"), ("einen Chor gegründet", "gründet Chor"),
            ("ein Wandbild gemalt", "malt Wandbild"), ("den Stadtlauf gewonnen", "gewinnt Stadtlauf")),
           ("Etwa {n} Menschen sahen zu.", "Die Bürgermeisterin gratulierte.",
            "Freunde feierten bis spät in die Nacht.")),
    "es": ("El {long}, {name}, de {city}, {event}. {filler}", "{city}, {num}: {name} {headline}",
           (("abrió una panadería", "abre panadería"), ("ganó el torneo de ajedrez", "gana torneo de ajedrez"),
            ("publicó una novela", "publica novela"), ("fundó un coro", "funda coro"),
            ("pintó un mural", "pinta mural"), ("ganó la carrera popular", "gana carrera popular")),
           ("Unas {n} personas fueron a verlo.", "El alcalde envió sus felicitaciones.",
            "Los amigos lo celebraron hasta tarde.")),
    "fr": ("Le {long}, {name} ({city}) {event}. {filler}", "{city}, {num} : {name} {headline}",
           (("a ouvert une boulangerie", "ouvre une boulangerie"),
            ("a gagné le tournoi d'échecs", "gagne le tournoi d'échecs"),
            ("a publié un roman", "publie un roman"), ("a fondé une chorale", "fonde une chorale"),
            ("a peint une fresque", "peint une fresque"), ("a gagné la course de la ville", "gagne la course de la ville")),
           ("Environ {n} personnes sont venues.", "Le maire a envoyé ses félicitations.",
            "Les amis ont fêté ça jusque tard.")),
    "it": ("Il {long} {name}, di {city}, ha {event}. {filler}", "{city}, {num}: {name} {headline}",
           (("aperto una panetteria", "apre una panetteria"), ("vinto il torneo di scacchi", "vince il torneo di scacchi"),
            ("pubblicato un romanzo", "pubblica un romanzo"), ("fondato un coro", "fonda un coro"),
            ("dipinto un murale", "dipinge un murale"), ("vinto la corsa cittadina", "vince la corsa cittadina")),
           ("Circa {n} persone sono venute a vedere.", "Il sindaco ha mandato le sue congratulazioni.",
            "Gli amici hanno festeggiato fino a tardi.")),
    "ja": ("{long}、{city}在住の{name}さんが{event}。{filler}", "【{city}】{name}さん、{headline}（{num}）",
           (("パン屋を開店しました", "パン屋開店"), ("チェス大会で優勝しました", "チェス大会優勝"),
            ("小説を出版しました", "小説出版"), ("合唱団を設立しました", "合唱団設立"),
            ("壁画を完成させました", "壁画完成"), ("市民マラソンを完走しました", "市民マラソン完走")),
           ("約{n}人が来ました。", "市長が祝福しました。", "友人たちが祝いました。")),
    "ko": ("{long}, {city}에 사는 {name} 씨가 {event}. {filler}", "[{city}] {name} 씨, {headline} ({num})",
           (("빵집을 열었습니다", "빵집 개업"), ("체스 대회에서 우승했습니다", "체스 대회 우승"),
            ("소설을 출간했습니다", "소설 출간"), ("합창단을 창단했습니다", "합창단 창단"),
            ("벽화를 완성했습니다", "벽화 완성"), ("시민 마라톤을 완주했습니다", "시민 마라톤 완주")),
           ("약 {n}명이 왔습니다.", "시장이 축하했습니다.", "친구들이 축하했습니다.")),
    "zh": ("{long}，{city}的{name}{event}。{filler}", "【{city}】{name}{headline}（{num}）",
           (("开了一家面包店", "开面包店"), ("赢得了象棋比赛", "赢得象棋赛"), ("出版了一部小说", "出版小说"),
            ("成立了一个合唱团", "成立合唱团"), ("完成了一幅壁画", "完成壁画"), ("跑完了城市马拉松", "跑完城市马拉松")),
           ("约{n}人到场。", "市长表示祝贺。", "朋友们为此庆祝。")),
}  # fmt: skip


def summarisation(rng: random.Random, lang: str) -> tuple[str, str]:
    story, headline, events, fillers = SUMMARY[lang]
    p, c, d = person(rng, lang), city(rng, lang), date(rng)
    event, short = rng.choice(events)
    n = rng.choice([k for k in range(20, 100) if k % 10 not in (0, 1)])
    filler = rng.choice(fillers).format(n=number_words(n, lang))
    text = story.format(long=fmt_date(d, "yMMMMd", lang), name=p.full, city=c, event=event, filler=filler)
    answer = headline.format(city=c, num=fmt_date(d, "yMd", lang), name=p.full, headline=short)
    return _prompt("summarisation", lang, text), answer


# ----------------------------------------------------------------------------- tone_adjustment

TONE = {
    # deadline frames (weekday, date, time), then (informal, formal) with {w} for the deadline
    "en": (("by {weekday}", "on {md}", "at {time}"),
           (("Send me the report {w}!", "Could you please send me the report {w}?"),
            ("Call me {w}!", "Could you please call me {w}?"),
            ("Check the numbers {w}!", "Could you please check the numbers {w}?"),
            ("Book a table {w}!", "Could you please book a table {w}?"),
            ("Bring the keys {w}!", "Could you please bring the keys {w}?"),
            ("Pay the invoice {w}!", "Could you please pay the invoice {w}?"),
            ("Answer the email {w}!", "Could you please answer the email {w}?"),
            ("Finish the slides {w}!", "Could you please finish the slides {w}?"))),
    "de": (("bis {weekday}", "am {md}", "um {time}"),
           (("Schick mir den Bericht {w}!", "Könnten Sie mir bitte den Bericht {w} schicken?"),
            ("Ruf mich {w} an!", "Könnten Sie mich bitte {w} anrufen?"),
            ("Prüf die Zahlen {w}!", "Könnten Sie bitte die Zahlen {w} prüfen?"),
            ("Reservier einen Tisch {w}!", "Könnten Sie bitte einen Tisch {w} reservieren?"),
            ("Bring die Schlüssel {w} mit!", "Könnten Sie bitte die Schlüssel {w} mitbringen?"),
            ("Bezahl die Rechnung {w}!", "Könnten Sie bitte die Rechnung {w} bezahlen?"),
            ("Beantworte die E-Mail {w}!", "Könnten Sie bitte die E-Mail {w} beantworten?"),
            ("Stell die Folien {w} fertig!", "Könnten Sie bitte die Folien {w} fertigstellen?"))),
    "es": (("antes del {weekday}", "el {md}", "a las {time}"),
           (("¡Envíame el informe {w}!", "¿Podría enviarme el informe {w}?"),
            ("¡Llámame {w}!", "¿Podría llamarme {w}?"),
            ("¡Revisa las cifras {w}!", "¿Podría revisar las cifras {w}?"),
            ("¡Reserva una mesa {w}!", "¿Podría reservar una mesa {w}?"),
            ("¡Trae las llaves {w}!", "¿Podría traer las llaves {w}?"),
            ("¡Paga la factura {w}!", "¿Podría pagar la factura {w}?"),
            ("¡Contesta el correo {w}!", "¿Podría contestar el correo {w}?"),
            ("¡Termina las diapositivas {w}!", "¿Podría terminar las diapositivas {w}?"))),
    "fr": (("avant {weekday}", "le {md}", "à {time}"),
           (("Envoie-moi le rapport {w} !", "Pourriez-vous m'envoyer le rapport {w} ?"),
            ("Appelle-moi {w} !", "Pourriez-vous m'appeler {w} ?"),
            ("Vérifie les chiffres {w} !", "Pourriez-vous vérifier les chiffres {w} ?"),
            ("Réserve une table {w} !", "Pourriez-vous réserver une table {w} ?"),
            ("Apporte les clés {w} !", "Pourriez-vous apporter les clés {w} ?"),
            ("Paie la facture {w} !", "Pourriez-vous payer la facture {w} ?"),
            ("Réponds à l'e-mail {w} !", "Pourriez-vous répondre à l'e-mail {w} ?"),
            ("Termine les diapositives {w} !", "Pourriez-vous terminer les diapositives {w} ?"))),
    "it": (("entro {weekday}", "il {md}", "alle {time}"),
           (("Mandami il rapporto {w}!", "Potrebbe mandarmi il rapporto {w}?"),
            ("Chiamami {w}!", "Potrebbe chiamarmi {w}?"),
            ("Controlla i numeri {w}!", "Potrebbe controllare i numeri {w}?"),
            ("Prenota un tavolo {w}!", "Potrebbe prenotare un tavolo {w}?"),
            ("Porta le chiavi {w}!", "Potrebbe portare le chiavi {w}?"),
            ("Paga la fattura {w}!", "Potrebbe pagare la fattura {w}?"),
            ("Rispondi all'e-mail {w}!", "Potrebbe rispondere all'e-mail {w}?"),
            ("Finisci le slide {w}!", "Potrebbe finire le slide {w}?"))),
    "ja": (("{weekday}までに", "{md}に", "{time}に"),
           (("{w}レポート送って。", "{w}レポートを送っていただけますか。"),
            ("{w}電話して。", "{w}お電話いただけますか。"),
            ("{w}数字確認して。", "{w}数字を確認していただけますか。"),
            ("{w}席予約して。", "{w}席を予約していただけますか。"),
            ("{w}鍵持ってきて。", "{w}鍵を持ってきていただけますか。"),
            ("{w}請求書払って。", "{w}請求書を支払っていただけますか。"),
            ("{w}メール返信して。", "{w}メールに返信していただけますか。"),
            ("{w}スライド仕上げて。", "{w}スライドを仕上げていただけますか。"))),
    "ko": (("{weekday}까지", "{md}에", "{time}에"),
           (("{w} 보고서 보내 줘.", "{w} 보고서를 보내 주시겠어요?"),
            ("{w} 전화해 줘.", "{w} 전화해 주시겠어요?"),
            ("{w} 숫자 확인해 줘.", "{w} 숫자를 확인해 주시겠어요?"),
            ("{w} 자리 예약해 줘.", "{w} 자리를 예약해 주시겠어요?"),
            ("{w} 열쇠 가져다 줘.", "{w} 열쇠를 가져다 주시겠어요?"),
            ("{w} 청구서 결제해 줘.", "{w} 청구서를 결제해 주시겠어요?"),
            ("{w} 이메일 답장해 줘.", "{w} 이메일에 답장해 주시겠어요?"),
            ("{w} 슬라이드 마무리해 줘.", "{w} 슬라이드를 마무리해 주시겠어요?"))),
    "zh": (("{weekday}前", "{md}", "{time}"),
           (("你{w}把报告发给我吧。", "请您{w}把报告发给我，谢谢。"),
            ("你{w}给我打个电话吧。", "请您{w}给我打个电话，谢谢。"),
            ("你{w}核对一下数字吧。", "请您{w}核对一下数字，谢谢。"),
            ("你{w}订一张桌子吧。", "请您{w}订一张桌子，谢谢。"),
            ("你{w}把钥匙带来吧。", "请您{w}把钥匙带来，谢谢。"),
            ("你{w}付一下账单吧。", "请您{w}付一下账单，谢谢。"),
            ("你{w}回复那封邮件吧。", "请您{w}回复那封邮件，谢谢。"),
            ("你{w}把幻灯片做完吧。", "请您{w}把幻灯片做完，谢谢。"))),
}  # fmt: skip


def tone_adjustment(rng: random.Random, lang: str) -> tuple[str, str]:
    frames, actions = TONE[lang]
    frame = rng.choice(frames)
    when = frame.format(weekday=rng.choice(_weekdays(lang)), md=fmt_date(date(rng), "MMMMd", lang),
                        time=fmt_time(time(rng), lang))  # fmt: skip
    informal, formal = rng.choice(actions)
    return _prompt("tone_adjustment", lang, informal.format(w=when)), formal.format(w=when)


GENERATORS = {
    "grammar_correction": grammar_correction,
    "question_answering": question_answering,
    "smart_reply": smart_reply,
    "summarisation": summarisation,
    "tone_adjustment": tone_adjustment,
}

# Characters by script, for checks that an example is in its language.
SCRIPT_PATTERNS = {
    "hangul": re.compile(r"[\uac00-\ud7a3]"),
    "kana": re.compile(r"[\u3040-\u30ff]"),
    "han": re.compile(r"[\u4e00-\u9fff]"),
    "latin_letter": re.compile(r"[A-Za-zÀ-ÿ]"),
}
