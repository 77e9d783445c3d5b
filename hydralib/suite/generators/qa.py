"""Application ``question_answering``: a two-line list "name: city, birthday" and a question about it.

See :mod:`hydralib.suite.generators` for the whole suite.
"""

from __future__ import annotations

import datetime as _dt
import random

from .words import (
    _prompt,
    city,
    date,
    fmt_date,
    people,
)

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
