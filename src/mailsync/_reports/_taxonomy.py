"""Why a delivery failed, in terms a program can act on: the :data:`~mailsync._reports.Reason`
of a recipient, whether its address should be suppressed (``permanent``), and the status a
report implies when it gives none.

Three sources, most trustworthy first: a precise RFC 3463 status (``5.1.1`` can only mean an
unknown mailbox), the diagnostic's words (English, German, Japanese: what servers write), then
a generic status (``5.7.1`` covers blocks, spam and policy alike) and the bare SMTP reply code.
Hand-written because no maintained Python library classifies bounces; the tables follow
RFC 3463 and its registry (RFC 5248), RFC 5321's reply codes, and the wording of common MTAs.

Every pattern here runs on text a stranger wrote: alternations of literal words and bounded
gaps only, so none backtracks more than linearly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailsync._reports._fields import reply_code_in, status_in_text
from mailsync._reports._values import Reason

__all__ = ["classify", "implied_status", "is_delay_text", "refusal_outcome"]

# (subject, detail) of an RFC 3463 status -> reason, and whether the code alone settles it.
# Codes that settle it name one cause; the others (x.7.1 "not authorised" is a block, a spam
# verdict or a policy) let the diagnostic's words decide first.
_STATUS_REASONS: Mapping[tuple[int, int], tuple[Reason, bool]] = {
    (1, 0): ("user_unknown", False),
    (1, 1): ("user_unknown", True),
    (1, 2): ("host_unknown", True),
    (1, 3): ("user_unknown", True),
    (1, 4): ("user_unknown", False),
    (1, 6): ("user_unknown", True),
    (1, 7): ("policy", False),
    (1, 8): ("policy", False),
    # RFC 7505's null MX, but Exchange's "recipient not found": the words decide.
    (1, 10): ("user_unknown", False),
    (2, 1): ("user_unknown", False),  # mailbox disabled; 4.2.1 is a rate limit (below)
    (2, 2): ("mailbox_full", True),
    (2, 3): ("message_too_large", True),
    (2, 4): ("system_error", False),
    (3, 0): ("system_error", False),
    (3, 1): ("system_error", False),
    (3, 2): ("system_error", False),
    (3, 3): ("policy", False),
    (3, 4): ("message_too_large", True),
    (3, 5): ("system_error", False),
    (4, 0): ("network_error", False),
    (4, 1): ("network_error", False),
    (4, 2): ("network_error", False),
    (4, 3): ("network_error", False),
    (4, 4): ("host_unknown", False),
    (4, 5): ("rate_limited", False),
    (4, 6): ("system_error", False),
    (4, 7): ("expired", True),
    (5, 3): ("rate_limited", False),
    (6, 0): ("policy", False),
    (7, 0): ("policy", False),
    (7, 1): ("blocked", False),
    (7, 2): ("policy", False),
    (7, 8): ("auth_failure", True),
    (7, 9): ("auth_failure", True),
    (7, 12): ("auth_failure", True),
    (7, 13): ("user_unknown", True),
    (7, 16): ("message_too_large", True),
    (7, 17): ("user_unknown", True),
    (7, 18): ("user_unknown", True),
    (7, 20): ("auth_failure", True),
    (7, 21): ("auth_failure", True),
    (7, 22): ("auth_failure", True),
    (7, 23): ("auth_failure", True),
    (7, 24): ("auth_failure", True),
    (7, 25): ("auth_failure", False),  # reverse DNS: a policy as often as an auth check
    (7, 26): ("auth_failure", True),
    (7, 27): ("policy", True),
    (7, 28): ("rate_limited", False),  # "mail flood": too much (suspected bulk) mail
    (7, 29): ("auth_failure", True),
}
_SUBJECT_REASONS: Mapping[int, Reason] = {
    5: "system_error",
    6: "policy",
    7: "policy",
}
_TEMPORARY_STATUS_REASONS: Mapping[tuple[int, int], tuple[Reason, bool]] = {
    (2, 1): ("rate_limited", False),  # "receiving mail at a rate that prevents delivery"
}
_REPLY_REASONS: Mapping[int, Reason] = {
    421: "system_error",
    451: "system_error",
    452: "system_error",
    530: "auth_failure",
    535: "auth_failure",
    538: "auth_failure",
    551: "user_unknown",
    552: "mailbox_full",
    553: "user_unknown",
    571: "blocked",
}


def _words(*alternatives: str) -> re.Pattern[str]:
    # Matched against lower-cased text: re.IGNORECASE makes each search four times slower.
    return re.compile("|".join(alternatives))


# In order: the first reason whose words occur wins, so the narrower come first ("sending
# quota" is a rate, "quota" a full mailbox; "mailbox size limit" a full mailbox, "size
# limit" a large message).
_TEXT_REASONS: tuple[tuple[Reason, re.Pattern[str]], ...] = (
    (
        "on_hold",
        _words(
            r"\bfrozen\b",
            r"retry time not (?:yet )?reached",
            r"held for (?:moderat|approval|review)",
            r"awaiting (?:moderat|approval)",
            r"gr[ae]ylist",
            r"保留",
        ),
    ),
    (
        "rate_limited",
        _words(
            r"rate.limit",
            r"too many (?:messages|mails|e-?mails|connections|recipients|requests|concurrent)",
            r"throttl",
            r"receiving mail (?:at|too) ",
            r"sending (?:rate|quota|limit)",
            r"(?:hourly|daily) (?:sending )?(?:limit|quota)",
            r"(?:unexpected|unusual|high) (?:volume|rate)",
            r"zu viele",
            r"送信数|送信制限|一時的に制限",
        ),
    ),
    (
        "mailbox_full",
        _words(
            r"mail ?box (?:is )?full",
            r"inbox is full",
            r"full mail ?box",
            r"over ?quota",
            r"quota (?:has been |was )?exceeded",
            r"exceed(?:ed|s)? (?:the |his |her |their |its )?(?:storage|quota|disk space)",
            r"(?:storage|disk|mailbox) quota",
            r"storage allocation",
            r"mail ?box (?:size|storage) (?:limit )?(?:exceeded|full|reached)",
            r"mail ?box has exceeded",
            r"insufficient (?:disk )?(?:space|storage) (?:in|for) ",
            r"not enough (?:disk |storage )?space",
            r"\bquota\b",
            r"postfach\b[^.\n]{0,40}\b(?:voll|überfüllt)\b",
            r"speicher(?:platz)?(?: ist)? (?:voll|erschöpft|überschritten)",
            r"kontingent",
            r"(?:メールボックス|受信箱|保存容量|ボックス)\S{0,10}(?:いっぱい|一杯|満杯|超過|超え|オーバー)",
            r"容量(?:超過|オーバー|不足)",
        ),
    ),
    (
        "message_too_large",
        _words(
            r"message (?:size |length )?(?:is )?too (?:big|large|long)",
            r"too (?:big|large) (?:message|mail)",
            r"message (?:size |length )?exceeds",
            r"exceeds? (?:the )?(?:maximum |max )?(?:allowed |permitted )?(?:message )?size",
            r"size limit",
            r"maximum message size",
            r"message file too big",
            r"mail (?:is )?too (?:big|large)",
            r"nachricht (?:ist )?zu gro(?:ß|ss)",
            r"zu gro(?:ß|ss)e nachricht",
            r"(?:サイズ|容量)が?大きすぎ",
            r"サイズ\S{0,10}(?:超え|制限)",
        ),
    ),
    (
        "host_unknown",
        _words(
            r"host (?:or domain name )?not found",
            r"domain (?:name )?not found",
            r"no such (?:domain|host)",
            r"unknown (?:host|domain)",
            r"host unknown",
            r"domain (?:does not|doesn't|does no longer) exist",
            r"name or service not known",
            r"nxdomain",
            r"\bno mx\b",
            r"unrouteable (?:mail domain|address)",
            r"invalid (?:recipient )?domain",
            r"couldn't find any host",
            r"null mx",
            r"domain does not accept mail",
            r"(?:host|domain) (?:ist )?unbekannt",
            r"domain existiert nicht",
            r"(?:ドメイン|ホスト)\S{0,10}(?:存在しません|見つかりません|不明)",
        ),
    ),
    (
        "user_unknown",
        _words(
            r"user unknown",
            r"unknown (?:user|recipient|mailbox|address|local.part|alias|addressee)",
            r"addressee unknown",
            r"no such (?:user|mailbox|recipient|address|account|person|local user)",
            r"(?:user|mailbox|recipient|address|account|e-?mail)(?: name)?"
            r" (?:does not|doesn't|does no longer|did not|no longer) exist",
            r"(?:invalid|bad|unknown) (?:recipient|mailbox|address|destination|user)",
            r"recipient (?:address )?(?:not found|unknown|invalid|does not exist)",
            r"mail ?box (?:not found|unavailable|disabled|inactive|is disabled|is inactive"
            r"|does not exist|not available|is unavailable)",
            r"(?:user|account|recipient)(?: account)? (?:not found|disabled|deactivated"
            r"|inactive|is disabled|has been disabled|is inactive|is unavailable"
            r"|has been terminated|suspended)",
            r"no mailbox",
            r"(?:valid|no) (?:notes )?mail ?file",
            r"not a valid (?:recipient|mailbox|user|address)",
            r"address (?:not found|unknown|does not exist|is not valid|invalid)",
            r"not listed in (?:the )?(?:public name & address book|domino directory|directory)",
            r"doesn't have an? \S{1,40} account",
            r"is not a known user",
            r"user not local",
            r"mailbox name not allowed",
            r"no longer (?:available|valid|in use|active|with)",
            r"benutzer (?:ist )?unbekannt|empfänger (?:ist )?unbekannt|adresse (?:ist )?unbekannt",
            r"unbekannte[rn]? (?:benutzer|empfänger|adresse)",
            r"(?:benutzer|empfänger|postfach|adresse) (?:existiert nicht|gibt es nicht)",
            r"kein(?:en)? (?:benutzer|postfach|empfänger)",
            r"ungültige[rn]? (?:adresse|empfänger)",
            r"宛先不明",
            r"(?:ユーザ|アカウント|アドレス|宛先|受信者)\S{0,12}"
            r"(?:存在しません|見つかりません|不明|ありません|無効)",
            r"該当(?:する)?ユーザ|そのようなユーザ",
        ),
    ),
    (
        "auth_failure",
        _words(
            r"\bspf\b",
            r"\bdkim\b",
            r"\bdmarc\b",
            r"authentication (?:is )?(?:required|failed|failure|credentials)",
            r"unauthenticated",
            r"not authenticated",
            r"sender (?:address )?verif(?:y|ication) failed",
            r"認証",
        ),
    ),
    (
        "spam_detected",
        _words(
            r"\bspam",
            r"junk ?mail",
            r"\bbulk (?:mail|e-?mail)",
            r"unsolicited",
            r"\bvirus",
            r"malware",
            r"phish",
            r"content (?:was )?(?:rejected|filter)",
            r"message content",
            r"unerwünscht",
            r"迷惑メール|スパム|ウイルス",
        ),
    ),
    (
        "blocked",
        _words(
            r"bl[ao]cklist",
            r"denylist",
            r"\bblock(?:ed|ing)?\b",
            r"listed (?:in|at|on|by) ",
            r"\b(?:dns)?rbl\b",
            r"spamhaus|spamcop|barracuda|sorbs",
            r"reputation",
            r"\bbanned\b",
            r"refused to talk",
            r"client host rejected",
            r"gesperrt|blockiert|schwarze liste",
            r"受信拒否|ブロック",
        ),
    ),
    (
        "policy",
        _words(
            r"\bpolicy\b|policies",
            r"not permitted",
            r"not allowed",
            r"prohibited",
            r"relay(?:ing)? (?:access )?(?:denied|not permitted)",
            r"not authori[sz]ed",
            r"administrative",
            r"access denied",
            r"restricted",
            r"smtputf8",
            r"richtlinie",
            r"nicht (?:erlaubt|gestattet|zulässig)",
            r"ポリシー|許可されていません",
        ),
    ),
    (
        "expired",
        _words(
            r"expired",
            r"retry timeout",
            r"too long in (?:the )?queue",
            r"giving up|gave up|given up",
            r"could not be delivered (?:for|within) ",
            r"delivery time",
            r"maximum (?:retry )?time",
            r"abgelaufen",
            r"zustellfrist",
            r"期限|時間切れ",
        ),
    ),
    (
        "network_error",
        _words(
            r"timed? ?out",
            r"connection (?:refused|reset|lost|closed|failed|dropped)",
            r"lost connection",
            r"no route to host",
            r"(?:network|host) (?:is )?unreachable",
            r"(?:could not|couldn't|unable to|cannot|can't) connect",
            r"tls (?:negotiation |handshake )?(?:failed|failure|error)",
            r"broken pipe",
            r"dns (?:lookup )?(?:failure|error)",
            r"temporary (?:lookup|dns) failure",
            r"verbindung|zeitüberschreitung|nicht erreichbar",
            r"接続|タイムアウト",
        ),
    ),
    (
        "system_error",
        _words(
            r"internal (?:server )?error",
            r"local error",
            r"system error",
            r"server error",
            r"configuration error",
            r"mail(?:ing)? loop|loops back",
            r"too many hops|hop count",
            r"i/o error",
            r"out of memory",
            r"disk full",
            r"insufficient system storage",
            r"resources? (?:temporarily )?unavailable",
            r"service (?:temporarily )?unavailable",
            r"mailer error",
            r"interner fehler|systemfehler|serverfehler",
            r"システムエラー|内部エラー|サーバエラー",
        ),
    ),
)
# Reasons that say the address itself is bad: worth suppressing.
_ADDRESS_REASONS = frozenset({"user_unknown", "host_unknown"})
# What a failure after days of temporary errors is: the last error stands for why.
_GAVE_UP_REASONS = frozenset(
    {"unknown", "network_error", "system_error", "rate_limited", "on_hold"}
)
# The code a reason implies when the report gives none, or only a reply code's class.
_IMPLIED_CODES: Mapping[Reason, str] = {
    "user_unknown": "1.1",
    "mailbox_full": "2.2",
    "host_unknown": "1.2",
    "message_too_large": "3.4",
    "spam_detected": "7.1",
    "blocked": "7.1",
}
_DELAY_TEXT = _words(
    r"retry time not (?:yet )?reached(?! for any host after a long failure period)",
    r"\bfrozen\b",
    r"will (?:continue|keep) (?:trying|to try|retrying)",
    r"still (?:being )?(?:retried|trying)",
    r"not yet been delivered|has not been delivered yet",
)


def text_reason(text: str | None) -> Reason | None:
    """The reason the words of ``text`` give, or None."""
    if not text:
        return None
    lowered = text.lower()
    for reason, pattern in _TEXT_REASONS:
        if pattern.search(lowered):
            return reason
    return None


def _status_reason(status: str | None) -> tuple[Reason, bool] | None:
    if status is None:
        return None
    klass, subject, detail = (int(n) for n in status.split("."))
    if klass == 4 and (subject, detail) in _TEMPORARY_STATUS_REASONS:
        return _TEMPORARY_STATUS_REASONS[subject, detail]
    found = _STATUS_REASONS.get((subject, detail))
    if found is None and subject in _SUBJECT_REASONS:
        found = (_SUBJECT_REASONS[subject], False)
    return found


def classify(action: str, status: str | None, diagnostic: str | None) -> tuple[Reason, bool]:
    """The reason for one recipient's outcome, and whether its address should be suppressed.

    Successes and MDN dispositions have no reason (``unknown``, not permanent).
    """
    if action not in ("failed", "delayed"):
        return "unknown", False
    by_status = _status_reason(status)
    reason: Reason
    if by_status is not None and by_status[1]:
        reason = by_status[0]
    else:
        code = reply_code_in(diagnostic)
        reason = (
            text_reason(diagnostic)
            or (by_status[0] if by_status else None)
            or (_REPLY_REASONS.get(code) if code else None)
            or "unknown"
        )
    if action == "failed" and status is not None and status[0] == "4":
        # Given up after retrying: a temporary cause became a final failure.
        reason = "expired" if reason in _GAVE_UP_REASONS else reason
        return reason, False
    return reason, action == "failed" and reason in _ADDRESS_REASONS


def implied_status(status: str | None, action: str, reason: Reason) -> str | None:
    """The precise code ``reason`` implies, for a recipient whose report states no enhanced
    status (``status`` is None, or only a bare reply code's class such as ``5.0.0``)."""
    code = _IMPLIED_CODES.get(reason)
    if code is None or action not in ("failed", "delayed"):
        return status
    klass = status[0] if status else "5" if action == "failed" else "4"
    return f"{klass}.{code}"


def is_delay_text(text: str | None) -> bool:
    """Whether ``text`` says the message is still queued: a "failed" that is a delay."""
    return bool(text) and _DELAY_TEXT.search((text or "").lower()) is not None


def refusal_outcome(code: int, text: str) -> tuple[str | None, Reason, bool]:
    """(status, reason, permanent) of a recipient an SMTP server refused with ``code``."""
    diagnostic = f"{code} {text}".strip()
    action = "failed" if code >= 500 else "delayed"
    status = status_in_text(diagnostic)
    reason, permanent = classify(action, status, diagnostic)
    return status, reason, permanent
