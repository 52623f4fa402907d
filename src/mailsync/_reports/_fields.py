"""Report fields: the ``Name: value`` blocks of a delivery-status or disposition part, and the
values inside them (typed addresses, hosts, dates, RFC 3463 status codes, actions).

Pure string work on text that is already decoded and capped; nothing here may backtrack more
than linearly, because a stranger wrote the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from mailsync._mime import parse_date

__all__ = [
    "action_of",
    "address_of",
    "best_status",
    "date_of",
    "diagnostic_of",
    "enhanced_status_in_text",
    "field_groups",
    "host_of",
    "per_message_fields",
    "status_in_text",
    "status_of",
    "strip_comments",
]

_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_PER_MESSAGE_FIELDS = (
    "reporting-mta",
    "reporting-ua",
    "original-envelope-id",
    "arrival-date",
    "x-original-message-id",
    "original-message-id",
)


def field_groups(text: str) -> list[dict[str, str]]:
    """Split report text into blocks of fields (lower-case name -> unfolded value).

    Blocks are separated by blank lines; a field seen twice also starts a new block, because
    some servers forget the blank line between recipients. Lines that are not fields are
    skipped. Lines may end in CRLF, LF or a lone CR.
    """
    groups: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    last: list[str] | None = None  # the pieces of the field a continuation line belongs to
    for line in text.splitlines():
        if not line.strip():
            groups, current, last = _close_group(groups, current), {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                last.append(line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _FIELD_NAME.fullmatch(name):
            last = None
            continue
        key = name.lower()
        if key in current:
            groups, current = _close_group(groups, current), {}
        last = current[key] = [value.strip()]
    # Joined once at the end: a field folded over thousands of lines stays linear.
    return [
        {name: " ".join(pieces) for name, pieces in group.items()}
        for group in _close_group(groups, current)
    ]


def _close_group(
    groups: list[dict[str, list[str]]], group: dict[str, list[str]]
) -> list[dict[str, list[str]]]:
    if group:
        groups.append(group)
    return groups


def per_message_fields(groups: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The per-message fields (Reporting-MTA, Arrival-Date...) wherever they stand."""
    fields: dict[str, str] = {}
    for group in groups:
        for name in _PER_MESSAGE_FIELDS:
            if name in group:
                fields.setdefault(name, group[name])
    return fields


def strip_comments(value: str) -> str:
    """Drop RFC 5322 ``(comments)``, nested or not, outside quoted strings."""
    if "(" not in value:
        return " ".join(value.split())
    out: list[str] = []
    depth = 0
    quoted = False
    for char in value:
        if char == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            continue
        elif not quoted and char == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(char)
    return " ".join("".join(out).split())


_UTF8_ADDR_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _typed_value(value: str | None) -> tuple[str, str] | None:
    """``"rfc822; <a@b>" -> ("rfc822", "a@b")``; the type is lower case, may be empty."""
    if not value:
        return None
    kind, semicolon, rest = strip_comments(value).partition(";")
    if not semicolon:
        kind, rest = "", kind
    rest = rest.strip().strip("<>").strip()
    return (kind.strip().lower(), rest) if rest else None


def address_of(value: str | None) -> str | None:
    """The bare address of a Final-/Original-Recipient value; None when absent."""
    typed = _typed_value(value)
    if typed is None:
        return None
    kind, address = typed
    if kind == "utf-8":  # RFC 6533 utf-8-addr-xtext outside a global report
        address = _UTF8_ADDR_ESCAPE.sub(lambda m: _code_point(m.group(1)), address)
    return address.strip("<>").strip() or None


def _code_point(hex_digits: str) -> str:
    number = int(hex_digits, 16)
    return chr(number) if number <= 0x10FFFF else "\ufffd"


def host_of(value: str | None) -> str | None:
    """The host of a Reporting-/Remote-MTA value, without its ``dns;`` type."""
    typed = _typed_value(value)
    return (typed[1].rstrip(".") or None) if typed else None


def diagnostic_of(value: str | None) -> str | None:
    """A Diagnostic-Code on one line, without its ``smtp;`` type."""
    if not value:
        return None
    kind, semicolon, rest = value.partition(";")
    if semicolon and _FIELD_NAME.fullmatch(kind.strip()):  # "smtp; 550 ..." -> "550 ..."
        value = rest
    return " ".join(value.split()) or None


def date_of(value: str | None) -> datetime | None:
    """An RFC 5322 date field (comments allowed) as an aware datetime."""
    return parse_date(strip_comments(value)) if value else None


# -- status codes (RFC 3463) -----------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_THEN_STATUS = re.compile(
    r"(?<!\d)[245]\d\d[ -]+\(?(?P<status>[245]\.\d{1,3}\.\d{1,3})(?![\d.])"
)
_HASH_STATUS = re.compile(r"#\s*(?P<status>[245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# An enhanced code standing alone in prose ("... failed (5.2.2)", "Status: 5.1.1"): only
# the classes of a failure or delay and the subjects RFC 3463 defines (0-7), so that a
# version number ("Exim 4.96.1") is not taken for one.
_LONE_STATUS = re.compile(
    r"(?:^|(?<=[\s(\[:=]))(?P<status>[45]\.[0-7]\.\d{1,2})(?=$|[\s)\],;:.](?!\d))", re.MULTILINE
)
_BARE_REPLY = re.compile(r"(?:^|[:;#(\[])\s*(?P<code>[45][0-5]\d)(?:[ -]|$)", re.MULTILINE)
_REPLY_AT_START = re.compile(r"\s*(?P<code>[245][0-5]\d)(?:[ -]|$)")


def status_of(value: str | None) -> str | None:
    """A valid RFC 3463 status from a Status field, normalised (``"5.01.1" -> "5.1.1"``)."""
    if not value:
        return None
    match = _STATUS.search(strip_comments(value))
    if match is None:
        return None
    klass, subject, detail = match.groups()
    return f"{klass}.{int(subject)}.{int(detail)}"


def status_in_text(text: str | None) -> str | None:
    """The status a diagnostic implies: its enhanced code (:func:`enhanced_status_in_text`),
    else the reply code's class (``550`` -> ``5.0.0``, "other undefined status")."""
    found = enhanced_status_in_text(text)
    if found is not None:
        return found
    code = reply_code_in(text)
    return f"{code // 100}.0.0" if code else None


def enhanced_status_in_text(text: str | None) -> str | None:
    """The RFC 3463 code a text states: after the reply code (``550 5.1.1``), after a ``#``
    (``#5.1.1``), or standing alone (``(5.2.2)``)."""
    if not text:
        return None
    for pattern in (_REPLY_THEN_STATUS, _HASH_STATUS, _LONE_STATUS):
        match = pattern.search(text)
        if match:
            return status_of(match.group("status"))
    return None


def reply_code_in(text: str | None) -> int | None:
    """The SMTP reply code a diagnostic starts with or quotes (``"host said: 550 ..."``)."""
    if not text:
        return None
    match = _REPLY_AT_START.match(text) or _BARE_REPLY.search(text)
    return int(match.group("code")) if match else None


def _specificity(status: str) -> int:
    _, subject, detail = status.split(".")
    return (subject != "0") + (detail != "0")


def best_status(field: str | None, text: str | None) -> str | None:
    """The Status field, unless it is generic (``5.0.0``) and the diagnostic ``text`` of the
    same class is more precise (``550 5.1.1 ...``); the text's code when the field is
    missing."""
    found = status_in_text(text)
    if field is None:
        return found
    if found is None or found[0] != field[0] or _specificity(found) <= _specificity(field):
        return field
    return found


# -- actions ---------------------------------------------------------------------------------

_ACTION_ALIASES = {
    "failure": "failed",
    "fail": "failed",
    "delay": "delayed",
    "deliver": "delivered",
    "success": "delivered",
    "relay": "relayed",
    "expand": "expanded",
}
_ACTION_OF_CLASS = {"2": "delivered", "4": "delayed", "5": "failed"}


def action_of(value: str | None, status: str | None) -> str | None:
    """An Action field, lower case and with common misspellings mended; the status class's
    action when the field is missing."""
    words = strip_comments(value).lower().split() if value else []
    if words:
        return _ACTION_ALIASES.get(words[0], words[0])
    # A missing Action is a broken report; the status class still says what happened.
    return _ACTION_OF_CLASS.get(status[0]) if status else None
