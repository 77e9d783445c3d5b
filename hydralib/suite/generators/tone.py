"""Application ``tone_adjustment``: an informal request rewritten in the formal register.

See :mod:`hydralib.suite.generators` for the whole suite.
"""

from __future__ import annotations

import random

from .words import (
    _prompt,
    _weekdays,
    date,
    fmt_date,
    fmt_time,
    time,
)

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
