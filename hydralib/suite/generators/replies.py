"""Application ``smart_reply``: a message from a named sender and the templated reply of its kind.

See :mod:`hydralib.suite.generators` for the whole suite.
"""

from __future__ import annotations

import random

from .words import (
    _prompt,
    _weekdays,
    fmt_time,
    person,
    time,
)

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
