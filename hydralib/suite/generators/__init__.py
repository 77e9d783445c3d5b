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

The package's parts: :mod:`.words` (locales, words from package data,
sampling helpers, instructions) and one module per application
(:mod:`.grammar`, :mod:`.qa`, :mod:`.replies`, :mod:`.headlines`,
:mod:`.tone`); :data:`GENERATORS` maps each application to its generator.
Every name is importable from ``hydralib.suite.generators`` as before.
"""

from __future__ import annotations

from .words import (  # noqa: F401 (the vocabulary, importable from here as before)
    BABEL_LOCALES,
    FAKER_LOCALES,
    CJK,
    ARROW,
    LANGUAGE_CODES,
    DAYS,
    YEARS,
    HOURS,
    MINUTES,
    _ARTICLE_START,
    _clean,
    _person_names,
    _city_names,
    _language_names,
    _weekdays,
    _month_names,
    fmt_date,
    fmt_time,
    number_words,
    Person,
    person,
    people,
    city,
    date,
    time,
    INSTRUCTIONS,
    _prompt,
    SCRIPT_PATTERNS,
)
from .grammar import (  # noqa: F401
    GRAMMAR_TEMPLATES,
    _PUNCT,
    _END,
    _ASCII_PUNCT,
    GRAMMAR_ERRORS,
    GRAMMAR_ERROR_WEIGHTS,
    _join,
    grammar_correction,
    _case_error,
)
from .qa import (  # noqa: F401
    QA_FORMS,
    QA_PEOPLE,
    question_answering,
)
from .replies import (  # noqa: F401
    SMART_REPLY,
    smart_reply,
)
from .headlines import (  # noqa: F401
    SUMMARY,
    summarisation,
)
from .tone import (  # noqa: F401
    TONE,
    tone_adjustment,
)

GENERATORS = {
    "grammar_correction": grammar_correction,
    "question_answering": question_answering,
    "smart_reply": smart_reply,
    "summarisation": summarisation,
    "tone_adjustment": tone_adjustment,
}
