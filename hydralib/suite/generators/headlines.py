"""Application ``summarisation``: a two-sentence news item and its fixed-form headline.

See :mod:`hydralib.suite.generators` for the whole suite.
"""

from __future__ import annotations

import random

from .words import (
    _prompt,
    city,
    date,
    fmt_date,
    number_words,
    person,
)

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
