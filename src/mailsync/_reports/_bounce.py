"""Bounces that follow no standard: the text notices of qmail, old Exim and Sendmail, Exchange
2003, Lotus Notes/Domino, Apache James, DragonFly's dma, Japanese carriers and the many
generic "MAILER-DAEMON"/"postmaster" notices, in English, German and Japanese.

Recognised conservatively: an ordinary message that merely talks about delivery, an
auto-reply (RFC 3834), a challenge-response mail or a forwarded bounce is not a report. A
message counts only when a mail system sent it (a daemon's From, a null Return-Path) or its
subject is a bounce's, and then only with a failed recipient or a returned original.

Every pattern here runs on text a stranger wrote, so none may backtrack more than linearly:
no two adjacent quantifiers that can match the same characters.
"""

from __future__ import annotations

import email.utils
import html
import re

from mailsync._message import HeaderMap
from mailsync._reports._fields import enhanced_status_in_text, status_in_text
from mailsync._reports._taxonomy import classify, implied_status, text_reason
from mailsync._reports._tree import (
    ADDRESS_LIMIT,
    TEXT_LIMIT,
    Mail,
    Part,
    headers_in,
    one_line,
    original_headers,
    original_message_id,
    part_text,
)
from mailsync._reports._values import DeliveryReport, RecipientReport, no_headers

__all__ = ["bounce_subject", "from_daemon", "notice_text", "parse_bounce"]

_DAEMON_MAILBOX = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|mdaemon|mailerdaemon)$", re.IGNORECASE
)
_DAEMON_NAME = re.compile(
    r"^(?:mail delivery (?:sub)?system|mail delivery (?:service|agent)|mailer[-_ ]?daemon"
    r"|mail administrator|postmaster|mail system|system administrator)$",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"""^\s*(?:
        undelivered\ mail\ returned\ to\ sender
      | undeliver(?:able|ed)(?:\ mail|\ message)?\s*(?::|$|returned)
      | returned\ mail\s*:
      | mail\ delivery\ fail
      | failure\ notice\s*$
      | delivery\ status\ notification\s*\((?:failure|delay)\)
      | delivery\ failure
      | delivery\ notification\s*:\s*delivery\ has\ (?:failed|been\ delayed)
      | delivery\ has\ failed
      | non-?deliver(?:y|able)\ (?:report|notification|mail)
      | warning\s*:\ could\ not\ send\ message
      | delayed\ mail\ \(still\ being\ retried\)
      | mail\ system\ error\ -\ returned\ mail
      | message\ (?:not\ delivered|delivery\ (?:failed|delayed))
      | (?:unzustellbar|nicht\ zustellbar|unzustellbare\ nachricht)
      | zustellung\ fehlgeschlagen
      | (?:メール)?(?:送信|配信|配送)エラー
      | 不達
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# A "copy of the message follows" line: dashes first, then one of these phrases.
_ORIGINAL_MARKER = re.compile(
    r"\b(?:copy of the message|original message|message headers? follow"
    r"|returned message|undelivered message|unsent message|original headers"
    r"|kopie der nachricht|ursprüngliche nachricht)\b|元のメッセージ|元のメール",
    re.IGNORECASE,
)
# The same line without dashes, alone on its line ("Original message follows.").
_ORIGINAL_LINE = re.compile(
    r"\s*(?:original message follows|message headers follow|original message headers"
    r"|below this line is a copy of the message)\s*[.:]?\s*",
    re.IGNORECASE,
)
_BOUNCE_WORDS = re.compile(
    r"could ?n[o']t be (?:delivered|reached)|was not delivered|not (?:yet )?been delivered"
    r"|cannot be (?:delivered|reached)|did not reach|undeliver|delivery (?:has )?failed"
    r"|error delivering|unable to deliver|(?:was ?n[o']t|not) be(?:en)? delivered"
    r"|failed|permanent|giving up|given up|rejected|does not exist"
    r"|user unknown|unknown (?:user|recipient)|delayed|temporar|no such user"
    r"|unzustellbar|nicht zugestellt|konnte nicht|fehlgeschlagen"
    r"|届きませんでした|送信できませんでした|配信できませんでした|配送できませんでした|宛先不明|不達",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"not yet been delivered|has not been delivered yet|will (?:continue|keep) trying"
    r"|attempts will continue|still being retried|delivery (?:has been )?delayed"
    r"|could not send message for past|retry time not (?:yet )?reached(?! for any host)"
    r"|\bfrozen\b|noch nicht zugestellt|遅延",
    re.IGNORECASE,
)
_PERMANENT_WORDS = re.compile(
    r"permanent|given up|giving up|not going to try again|could ?n[o']t be delivered"
    r"|was not delivered|cannot be reached|delivery has failed",
    re.IGNORECASE,
)
# An RFC 3834 auto-reply, or a challenge-response system asking the sender to prove itself:
# mail systems send both, and neither says a delivery failed.
_CHALLENGE_WORDS = re.compile(
    r"approved senders|whitelist|allow ?list|confirm (?:that )?you|verify (?:that )?you"
    r"|captcha|prove (?:that )?you|release (?:your|the) message|click (?:on )?the link"
    r"|challenge",
    re.IGNORECASE,
)
_ADDR = r"[^\s<>()\[\]@,;:\"'=]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
# A line that names a recipient: the address first, then nothing, a colon, "..." (sendmail),
# a comment, a comma (Zoho), " on <date>" (Exchange). The lookbehind, not a second run of
# spaces, asks for the space before "on".
_ADDRESS_LINE = re.compile(
    rf"""^\s*(?:[<'"]\s*)?(?P<address>{_ADDR})\s*(?:[>'"]\s*)?"""
    r"""(?P<rest>$|[:,].*|\.\.\..*|\(.*|(?<=\s)on\s.*|\s-\s.*)$""",
    re.IGNORECASE,
)
_ADDRESS_IN_ANGLES = re.compile(rf"<(?:mailto:)?(?P<address>{_ADDR})>")
# Only where a word starts: from every position of a long run with no "@" in reach, the
# search would rescan the run (quadratic).
_ANY_ADDRESS = re.compile(rf"(?<![^\s<>()\[\]@,;:\"'=])(?P<address>{_ADDR})")
# "RCPT TO: <bob@...>" (Apache James's details), "To: bob@..." / "宛先: bob@..." labels.
_LABELLED = re.compile(
    rf"^\s*(?:rcpt to|recipient(?:\(s\))?|failed recipient|original-recipient|unknown user"
    rf"|unknown recipient|user unknown|invalid recipient|no such user|宛先|受信者|empfänger)"
    rf"\s*[:：]\s*<?(?P<address>{_ADDR})",
    re.IGNORECASE,
)
_NOT_DELIVERED_TO = re.compile(
    r"was not delivered to\s*:|following (?:address|recipient)\(?e?s?\)?(?: failed)?\s*:"
    r"|failed recipient\(?s?\)?\s*:"
    r"|could not be delivered to\s*:|delivery (?:has )?failed to(?: these recipients"
    r"(?: or groups)?)?\s*:",
    re.IGNORECASE,
)
_BECAUSE = re.compile(
    r"^[ \t]*because[ \t]*:(?:[^\S\n]*\n)+(?P<reason>(?:[ \t]*\S.*\n?)+)",
    re.IGNORECASE | re.MULTILINE,
)
_SCRIPT = re.compile(r"<(script|style)\b", re.IGNORECASE)
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
# Mailboxes of mail systems and help desks a notice mentions: never the failed recipient.
_SYSTEM_LOCAL_PARTS = re.compile(
    r"^(?:mailer[-_.]?daemon|postmaster|abuse|hostmaster|webmaster|noreply|no-reply"
    r"|support|help|root|bounces?)$",
    re.IGNORECASE,
)


def from_daemon(headers: HeaderMap) -> str | None:
    """The sender's domain (maybe empty) when a mail system sent the message, else None."""
    return_path = one_line(headers.get("Return-Path", "")[:ADDRESS_LIMIT])
    sender = one_line(headers.get("From", "")[:ADDRESS_LIMIT]) or ""
    for name, address in _addresses(sender):
        local, _, domain = address.rpartition("@") if "@" in address else (address, "", "")
        if _DAEMON_MAILBOX.match(local) or _DAEMON_NAME.match(name.strip()):
            return domain.lower()
    if return_path is not None and not return_path.strip("<> "):
        address = email.utils.parseaddr(sender)[1]
        return address.rpartition("@")[2] if "@" in address else ""
    return None


def bounce_subject(headers: HeaderMap) -> bool:
    """Whether the Subject is one mail systems give their bounces."""
    return bool(_BOUNCE_SUBJECT.match(one_line(headers.get("Subject", "")[:ADDRESS_LIMIT]) or ""))


def _addresses(value: str | None) -> list[tuple[str, str]]:
    if not value:
        return []
    try:
        return email.utils.getaddresses([value[:ADDRESS_LIMIT]])
    except Exception:
        return []


def _daemon_by_name(mail: Mail) -> bool:
    for name, address in _addresses(mail.header("From")):
        local = address.rpartition("@")[0] if "@" in address else address
        if _DAEMON_MAILBOX.match(local) or _DAEMON_NAME.match(name.strip()):
            return True
    return False


def _auto_replied(mail: Mail) -> bool:
    auto = (mail.header("Auto-Submitted") or "").lower()
    return auto.startswith("auto-replied") or "X-Autoreply" in mail.headers


def parse_bounce(mail: Mail, notice: str) -> DeliveryReport | None:
    """The bounce ``mail`` is, read from its human-readable ``notice``; None when it is no
    bounce."""
    if mail.from_daemon is None and not mail.bounce_subject:
        return None
    if _auto_replied(mail) and not _daemon_by_name(mail):
        return None  # Exim marks its own bounces auto-replied: only a person's reply counts
    explanation, quoted = _split_notice(notice)
    original = original_headers(mail.parts)
    if not original:
        original = _quoted_original(quoted)
    found = _bounce_recipients(mail, explanation, original)
    recipients = tuple(report for report, _ in found)
    if not _daemon_by_name(mail) or _CHALLENGE_WORDS.search(explanation):
        # Only a null Return-Path (auto-replies have one too), or a subject alone: only
        # coded recipients are evidence enough. A newsletter with a bounce-like subject may
        # still list a contact address.
        recipients = tuple(report for report, coded in found if coded)
        if not recipients:
            return None
    if not recipients and not original:
        return None
    return DeliveryReport(
        kind="bounce",
        original_message_id=original_message_id(mail, original),
        reporting_mta=mail.from_daemon or None,
        recipients=recipients,
        original_headers=original,
        subject=mail.header("Subject"),
    )


def notice_text(parts: list[Part]) -> str:
    """The human-readable explanation: the first text/plain part, else the first text/html
    part with its tags removed; only its first :data:`TEXT_LIMIT` bytes, ``\\n`` line ends."""
    leaves = [part for part in parts if not part.is_container]
    for wanted in ("text/plain", "text/html"):
        for part in leaves:
            if part.content_type == wanted and part.disposition != "attachment":
                text, _ = part_text(part, TEXT_LIMIT)
                return _html_to_text(text) if wanted == "text/html" else text
    return ""


def _html_to_text(text: str) -> str:
    text = _LINE_BREAK_TAG.sub("\n", _drop_scripts(text))
    # A "<" with no ">" after it opens no tag, and neither does any "<" after it: the tags
    # are all before the last ">" (matching past it would rescan the rest for every "<").
    end = text.rfind(">") + 1
    return html.unescape(_TAG.sub(" ", text[:end]) + text[end:])


def _drop_scripts(text: str) -> str:
    """Replace ``<script>``/``<style>`` elements with a space; an unclosed one stays (its
    tags are dropped later, as any tag)."""
    out: list[str] = []
    position = 0
    unclosed: set[str] = set()  # once a close tag is missing, it is missing for the rest
    for match in _SCRIPT.finditer(text):
        name = match.group(1).lower()
        if match.start() < position or name in unclosed:
            continue
        close = re.compile(rf"</{name}\s*>", re.IGNORECASE).search(text, match.end())
        if close is None:
            unclosed.add(name)
            continue
        out.append(text[position : match.start()])
        out.append(" ")
        position = close.end()
    out.append(text[position:])
    return "".join(out)


def _split_notice(text: str) -> tuple[str, str]:
    """(explanation, quoted original) of a text bounce, at its "copy of the message" line."""
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        dashed = line.lstrip(" \t").startswith("--") and _ORIGINAL_MARKER.search(line)
        if dashed or _ORIGINAL_LINE.fullmatch(line):
            return text[:start], text[end:]
        start = end + 1
    return text, ""


def _quoted_original(text: str) -> HeaderMap:
    """Headers of an original quoted inline; only trusted when they carry a Message-ID or
    trace fields, so a quoted "From:/Subject:" summary is not mistaken for them."""
    if not text.strip():
        return no_headers()
    headers = headers_in(text.encode("utf-8", "surrogateescape"))
    if any(name in headers for name in ("Message-ID", "Received", "Return-Path")):
        return headers
    return no_headers()


_Found = dict[str, tuple[str, list[str]]]


def _bounce_recipients(
    mail: Mail, notice: str, original: HeaderMap
) -> list[tuple[RecipientReport, bool]]:
    ignored = _bystanders(mail, original)
    found: _Found = {}
    if _BOUNCE_WORDS.search(notice):
        _collect_address_lines(notice, found)
        _collect_listed(notice, found)
    _collect_coded_lines(notice, found)
    _collect_labelled(notice, found)
    if not found:
        for address in _split_list(mail.header("X-Failed-Recipients")):
            found.setdefault(address.lower(), (address, []))
    entries = [(a, d) for key, (a, d) in found.items() if key not in ignored]
    if not entries and _daemon_by_name(mail) and _BOUNCE_WORDS.search(notice):
        entries = _mentioned_recipients(notice, original, ignored)
    return _bounce_reports(entries, notice)


def _bystanders(mail: Mail, original: HeaderMap) -> set[str]:
    """Addresses a bounce mentions that cannot be the failed recipient: the sender of the
    original (who receives the bounce), the mail system itself, the original's author."""
    people = _addresses(mail.header("To")) + _addresses(mail.header("From"))
    people += _addresses(original.get("From")) + _addresses(original.get("Sender"))
    return {address.lower() for _, address in people if address}


def _split_list(value: str | None) -> list[str]:
    return [item.strip().strip("<>") for item in (value or "").split(",") if "@" in item]


def _collect_address_lines(notice: str, found: _Found) -> None:
    """Recipients as most text bounces list them: a line starting with the address, the
    reason on the lines below it (qmail, Exim, Sendmail, Exchange, Notes)."""
    current: list[str] | None = None
    for line in notice.splitlines():
        match = _ADDRESS_LINE.match(line)
        if match:
            address = match.group("address")
            current = found.setdefault(address.lower(), (address, []))[1]
            rest = match.group("rest").lstrip(":,.- ")
            if rest and not re.match(r"on\s", rest):  # " on <date>" is not a reason
                current.append(rest)
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line.strip())


def _collect_listed(notice: str, found: _Found) -> None:
    """Recipients in the paragraph after "was not delivered to:" (Lotus Domino) and the like,
    however each line is written ("Emil <emil@...>", "emil@... (Emil)")."""
    match = _NOT_DELIVERED_TO.search(notice)
    if match is None:
        return
    lines = notice[match.end() :].split("\n")
    started = False
    for line in lines[:50]:
        if not line.strip():
            if started:
                return
            continue
        started = True
        for address in _ANY_ADDRESS.findall(line):
            found.setdefault(address.lower(), (address, []))


def _collect_coded_lines(notice: str, found: _Found) -> None:
    """Recipients named inline with an SMTP reply: ``550 5.1.1 <bob@example.net>: ...``, or
    in angles on a line that says delivery failed (``error delivering your mail to <bob>``)."""
    for line in notice.splitlines():
        if "@" not in line:
            continue
        if status_in_text(line) is None and not _BOUNCE_WORDS.search(line):
            continue
        for match in _ADDRESS_IN_ANGLES.finditer(line):
            address = match.group("address")
            entry = found.setdefault(address.lower(), (address, []))
            if not entry[1]:
                entry[1].append(line.strip())


def _collect_labelled(notice: str, found: _Found) -> None:
    for line in notice.splitlines():
        match = _LABELLED.match(line)
        if match:
            address = match.group("address")
            found.setdefault(address.lower(), (address, []))


def _mentioned_recipients(
    notice: str, original: HeaderMap, ignored: set[str]
) -> list[tuple[str, list[str]]]:
    """The last resort: the addresses the notice mentions that the returned original was
    sent to; else the one address it mentions, when it mentions only one."""
    sent_to = {
        address.lower()
        for name in ("To", "Cc")
        for _, address in _addresses(original.get(name))
        if address
    }
    mentioned: dict[str, tuple[str, list[str]]] = {}
    for line in notice.splitlines():
        for address in _ANY_ADDRESS.findall(line):
            key = address.lower()
            local = key.rpartition("@")[0]
            if key in ignored or _SYSTEM_LOCAL_PARTS.match(local):
                continue
            mentioned.setdefault(key, (address, [line.strip()]))
    chosen = [entry for key, entry in mentioned.items() if key in sent_to]
    if not chosen and len(mentioned) == 1:
        chosen = list(mentioned.values())
    return chosen


def _bounce_reports(
    entries: list[tuple[str, list[str]]], notice: str
) -> list[tuple[RecipientReport, bool]]:
    """A report for each ``(address, lines)``, and whether a reply code or status backs it."""
    permanent_words = bool(_PERMANENT_WORDS.search(notice))
    delayed_notice = bool(_DELAY_WORDS.search(notice)) and not permanent_words
    because = _BECAUSE.search(notice)  # Lotus Notes gives the reason in its own paragraph
    whole = " ".join(notice.split())[:4000]
    reports = []
    for address, lines in entries:
        diagnostic = " ".join(" ".join(lines).split()) or None
        if because is not None and len(entries) == 1 and not status_in_text(diagnostic):
            diagnostic = " ".join(because.group("reason").split())
        # One recipient: the whole notice speaks of it, where its own lines say too little.
        context = diagnostic
        if len(entries) == 1 and not (status_in_text(diagnostic) or text_reason(diagnostic)):
            context = f"{diagnostic or ''} {whole}".strip()
        status = status_in_text(context)
        temporary = status is not None and status.startswith("4") and not permanent_words
        action = "delayed" if delayed_notice or temporary else "failed"
        reason, permanent = classify(action, status, context)
        if not enhanced_status_in_text(context):
            status = implied_status(status, action, reason)
        report = RecipientReport(
            recipient=address,
            action=action,
            status=status,
            diagnostic=diagnostic,
            final_recipient=address,
            reason=reason,
            permanent=permanent,
        )
        reports.append((report, status_in_text(diagnostic) is not None))
    return reports
