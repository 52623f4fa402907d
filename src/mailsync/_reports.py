"""Delivery reports: what a DSN, an MDN or a bounce says about a message sent earlier.

This module owns :func:`parse_report` and the values it returns, :class:`DeliveryReport` and
:class:`RecipientReport`. It understands:

- RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``),
  RFC 6533's ``message/global-delivery-status``, and the usual damage: a status part mis-typed
  as ``text/plain`` or base64-encoded, folded fields, comments, missing blank lines, ``X-*``
  fields;
- RFC 8098 message disposition notifications (``report-type=disposition-notification``);
- the common non-standard bounces: qmail, old Exim, old Sendmail, Exchange 2003 and Lotus
  Notes text bounces, and generic notices from MAILER-DAEMON/postmaster that name a recipient
  with an SMTP reply code or return the original.

The MIME structure comes from the stdlib :mod:`email` package (``policy.default``); the report
fields and the text bounces are read by hand here, because no maintained library parses DSNs,
MDNs and free-text bounces into typed values. Text bounces are recognised conservatively: an
ordinary message that merely talks about delivery is not a report.

This module is pure: no I/O, no state, and it never raises on broken input. It must not import
:mod:`mailsync._message` at module level (``Message.delivery_report`` imports this module), so
the few helpers it shares with the message model are imported where they are used.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.parser
import email.policy
import email.utils
import html
import quopri
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message as StdMessage
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

if TYPE_CHECKING:
    from mailsync._message import HeaderMap

__all__ = ["DeliveryReport", "RecipientReport", "ReportKind", "parse_report"]

#: What kind of report a message is.
ReportKind: TypeAlias = Literal["dsn", "mdn", "bounce"]


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What a report says about one recipient.

    Attributes:
        recipient: The bare address the report is about: the Original-Recipient when given
            (the address as it was sent to), else the Final-Recipient.
        action: Lower case. For a DSN or bounce ``failed``, ``delayed``, ``delivered``,
            ``relayed`` or ``expanded``; for an MDN the disposition type (``displayed``,
            ``deleted``, ``dispatched``, ``processed``, or the obsolete ``denied``/``failed``).
        status: The RFC 3463 status code, e.g. ``"5.1.1"``; None when absent (always for MDNs).
        diagnostic: The remote server's reply or the bounce's explanation, without the
            ``smtp;`` type prefix.
        remote_mta: The host that answered, without the ``dns;`` prefix.
        final_recipient: The Final-Recipient address, bare.
        original_recipient: The Original-Recipient address, bare.
        last_attempt: When delivery was last attempted (aware datetime).
        will_retry_until: For ``delayed``: when the reporting server will give up.
    """

    recipient: str
    action: str
    status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None
    final_recipient: str | None = None
    original_recipient: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


def _no_headers() -> HeaderMap:
    from mailsync._message import HeaderMap

    return HeaderMap(())


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A parsed delivery report; see :func:`parse_report`.

    Attributes:
        kind: ``"dsn"`` (RFC 3464), ``"mdn"`` (RFC 8098) or ``"bounce"`` (a non-standard
            notice).
        original_message_id: The Message-ID of the message the report is about, without angle
            brackets: from the MDN's Original-Message-ID, the returned original's headers, a
            ``X-Original-Message-ID`` field, or the report's In-Reply-To, in that order.
        envid: The envelope id given when sending (RFC 3461 ENVID), echoed by DSNs.
        reporting_mta: The host that wrote the report (Reporting-MTA; for an MDN the
            Reporting-UA's name; for a bounce the domain of the daemon that sent it).
        recipients: One entry per recipient the report speaks of, in report order.
        original_headers: The headers of the returned original (attached, headers-only, or
            quoted in a text bounce), decoded, case-insensitive; empty when none came back.
        subject: The report's own Subject.
        arrival_date: When the reporting server received the original (DSN Arrival-Date).
    """

    kind: ReportKind
    original_message_id: str | None = None
    envid: str | None = None
    reporting_mta: str | None = None
    recipients: tuple[RecipientReport, ...] = ()
    original_headers: HeaderMap = field(default_factory=_no_headers, hash=False)
    subject: str | None = None
    arrival_date: datetime | None = None

    @property
    def failed(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``failed``."""
        return self._with_action("failed")

    @property
    def delayed(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``delayed``."""
        return self._with_action("delayed")

    @property
    def delivered(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``delivered`` (not ``relayed`` or ``expanded``)."""
        return self._with_action("delivered")

    def _with_action(self, action: str) -> tuple[RecipientReport, ...]:
        return tuple(r for r in self.recipients if r.action == action)


class _HasRaw(Protocol):
    @property
    def raw(self) -> bytes: ...


def parse_report(message: _HasRaw | StdMessage | bytes) -> DeliveryReport | None:
    """Read a DSN, an MDN or a bounce; None for any other message.

    Args:
        message: A :class:`mailsync.Message` (anything with ``raw: bytes``), a stdlib
            ``email.message.Message``/``EmailMessage``, or the raw bytes.

    Returns:
        The report, or None when the message is not one. Never raises: a damaged report gives
        what could be read of it, or None.
    """
    try:
        parsed = _as_email(message)
        return None if parsed is None else _parse(parsed)
    except Exception:  # broken mail can trip anything in the stdlib parser; see the contract
        return None


def _as_email(message: object) -> StdMessage | None:
    if isinstance(message, StdMessage):
        return message
    if isinstance(message, bytes | bytearray | memoryview):
        return email.message_from_bytes(bytes(message), policy=email.policy.default)
    parsed = getattr(message, "email", None)  # a Message has parsed itself already
    if isinstance(parsed, StdMessage):
        return parsed
    raw = getattr(message, "raw", None)
    if isinstance(raw, bytes):
        return email.message_from_bytes(raw, policy=email.policy.default)
    return None


def _parse(message: StdMessage) -> DeliveryReport | None:
    report_type = _report_type(message)
    if report_type is not None and report_type not in _DELIVERY_REPORT_TYPES:
        return None  # an abuse (ARF) or TLS report: structured, but not about delivery
    for parse in (_parse_dsn, _parse_mdn, _parse_bounce):
        report = parse(message)
        if report is not None:
            return report
    return None


# -- MIME helpers -----------------------------------------------------------------------------

_DSN_PART_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MDN_PART_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_DELIVERY_REPORT_TYPES = frozenset(
    {
        "delivery-status",
        "global-delivery-status",
        "disposition-notification",
        "global-disposition-notification",
    }
)
_ORIGINAL_PART_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


def _content_type(part: StdMessage) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _report_type(part: StdMessage) -> str | None:
    if _content_type(part) != "multipart/report":
        return None
    try:
        value = part.get_param("report-type")
    except Exception:
        return None
    return value.strip().lower() if isinstance(value, str) else None


def _header(part: StdMessage, name: str) -> str | None:
    """One decoded, unfolded header value; None when absent or unreadable."""
    from mailsync._message import decode_header_value

    try:
        value = part.get(name)
    except Exception:
        return None
    if value is None:
        return None
    text = " ".join(decode_header_value(value).split())
    return text or None


def _parts(part: StdMessage) -> Iterator[StdMessage]:
    """``part`` and every part nested in it, not looking inside attached messages: a
    forwarded bounce is not a bounce."""
    yield part
    if not _content_type(part).startswith("multipart/"):
        return
    payload = part.get_payload()
    if not isinstance(payload, list):
        return
    for child in payload:
        if isinstance(child, StdMessage):
            yield from _parts(child)


def _children(part: StdMessage) -> list[StdMessage]:
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    return [child for child in payload if isinstance(child, StdMessage)]


def _leaf_text(part: StdMessage) -> str:
    from mailsync._message import decode_bytes

    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return _undo_surrogates(payload) if isinstance(payload, str) else ""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(data, charset)


def _structured_text(part: StdMessage) -> str:
    """The text of a report or headers part, whatever shape the stdlib gave it.

    The stdlib parses ``message/*`` bodies into header blocks and ignores their transfer
    encoding, so the text is rebuilt from the blocks and decoded here.
    """
    blocks = _children(part)
    if not blocks:
        return _leaf_text(part)
    text = "\n\n".join(_block_text(block) for block in blocks)
    return _undo_transfer_encoding(text, _header(part, "Content-Transfer-Encoding"))


def _block_text(block: StdMessage) -> str:
    lines = [f"{name}: {value}" for name, value in block.raw_items()]
    body = _leaf_text(block)  # as bytes first: get_payload() would turn 8-bit text into "?"
    if not body.strip():
        return "\n".join(lines)
    if not lines:
        return body
    # Without this defect a blank line really separated the fields from the body (the
    # per-recipient groups of a global DSN); with it the body is the rest of a field block.
    broken = any(
        isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect)
        for defect in block.defects
    )
    return "\n".join(lines) + ("\n" if broken else "\n\n") + body


def _undo_transfer_encoding(text: str, encoding: str | None) -> str:
    from mailsync._message import decode_bytes

    encoding = (encoding or "").strip().lower()
    if encoding in _IDENTITY_ENCODINGS:
        return _undo_surrogates(text)
    data = text.encode("utf-8", "surrogateescape")
    if encoding == "quoted-printable":
        return decode_bytes(quopri.decodestring(data), "utf-8")
    if encoding != "base64":
        return _undo_surrogates(text)
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    try:
        decoded = base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return _undo_surrogates(text)
    return decode_bytes(decoded, "utf-8")


def _undo_surrogates(text: str) -> str:
    """Raw 8-bit bytes come out of the parser as surrogate escapes; UTF-8 is what RFC 6533
    reports carry."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- report fields ----------------------------------------------------------------------------

_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_PER_MESSAGE_FIELDS = (
    "reporting-mta",
    "reporting-ua",
    "original-envelope-id",
    "arrival-date",
    "x-original-message-id",
    "original-message-id",
)
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient")


def _field_groups(text: str) -> list[dict[str, str]]:
    """Split report text into blocks of fields (lower-case name -> unfolded value).

    Blocks are separated by blank lines; a field seen twice also starts a new block, because
    some servers forget the blank line between recipients. Lines that are not fields are
    skipped.
    """
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            groups, current, last = _close_group(groups, current), {}, None
            continue
        if line[0] in " \t":
            if last is not None:
                current[last] = f"{current[last]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _FIELD_NAME.fullmatch(name):
            last = None
            continue
        last = name.lower()
        if last in current:
            groups, current = _close_group(groups, current), {}
        current[last] = value.strip()
    return _close_group(groups, current)


def _close_group(groups: list[dict[str, str]], group: dict[str, str]) -> list[dict[str, str]]:
    if group:
        groups.append(group)
    return groups


def _per_message_fields(groups: Iterable[Mapping[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for group in groups:
        for name in _PER_MESSAGE_FIELDS:
            if name in group:
                fields.setdefault(name, group[name])
    return fields


def _strip_comments(value: str) -> str:
    """Drop RFC 5322 ``(comments)``, nested or not, outside quoted strings."""
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
    kind, semicolon, rest = _strip_comments(value).partition(";")
    if not semicolon:
        kind, rest = "", kind
    rest = rest.strip().strip("<>").strip()
    return (kind.strip().lower(), rest) if rest else None


def _address(value: str | None) -> str | None:
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


def _host(value: str | None) -> str | None:
    typed = _typed_value(value)
    return (typed[1].rstrip(".") or None) if typed else None


def _diagnostic(value: str | None) -> str | None:
    if not value:
        return None
    kind, semicolon, rest = value.partition(";")
    if semicolon and _FIELD_NAME.fullmatch(kind.strip()):  # "smtp; 550 ..." -> "550 ..."
        value = rest
    return " ".join(value.split()) or None


def _date(value: str | None) -> datetime | None:
    from mailsync._message import parse_date

    return parse_date(_strip_comments(value)) if value else None


_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY_THEN_STATUS = re.compile(
    r"(?<!\d)[245]\d\d[ -]+\(?(?P<status>[245]\.\d{1,3}\.\d{1,3})(?![\d.])"
)
_HASH_STATUS = re.compile(r"#\s*(?P<status>[245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_BARE_REPLY = re.compile(r"(?:^|[:;#])\s*(?P<code>[45][0-5]\d)(?:[ -]|$)", re.MULTILINE)


def _status(value: str | None) -> str | None:
    """A valid RFC 3463 status from a Status field, normalised (``"5.01.1" -> "5.1.1"``)."""
    if not value:
        return None
    match = _STATUS.search(_strip_comments(value))
    if match is None:
        return None
    klass, subject, detail = match.groups()
    return f"{klass}.{int(subject)}.{int(detail)}"


def _status_in_text(text: str | None) -> str | None:
    """The status a diagnostic implies: an enhanced code after the reply code or a ``#``,
    else the reply code's class (``550`` -> ``5.0.0``, "other undefined status")."""
    if not text:
        return None
    for pattern in (_REPLY_THEN_STATUS, _HASH_STATUS):
        match = pattern.search(text)
        if match:
            return _status(match.group("status"))
    match = _BARE_REPLY.search(text)
    return f"{match.group('code')[0]}.0.0" if match else None


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


def _action(value: str | None, status: str | None) -> str | None:
    words = _strip_comments(value).lower().split() if value else []
    if words:
        return _ACTION_ALIASES.get(words[0], words[0])
    # A missing Action is a broken report; the status class still says what happened.
    return _ACTION_OF_CLASS.get(status[0]) if status else None


# -- DSN (RFC 3464) ---------------------------------------------------------------------------


def _parse_dsn(message: StdMessage) -> DeliveryReport | None:
    part = _report_part(message, _DSN_PART_TYPES, ("delivery-status", "global-delivery-status"))
    if part is None:
        return None
    groups = _field_groups(_structured_text(part))
    fields = _per_message_fields(groups)
    recipients = tuple(r for r in map(_dsn_recipient, groups) if r is not None)
    if not recipients and "reporting-mta" not in fields:
        return None  # whatever this part is, it is not a delivery status
    original = _original_headers(message)
    return DeliveryReport(
        kind="dsn",
        original_message_id=_original_message_id(
            message, original, fields.get("x-original-message-id")
        ),
        envid=_envid(fields.get("original-envelope-id")),
        reporting_mta=_host(fields.get("reporting-mta")),
        recipients=recipients,
        original_headers=original,
        subject=_header(message, "Subject"),
        arrival_date=_date(fields.get("arrival-date")),
    )


def _report_part(
    message: StdMessage, part_types: frozenset[str], report_types: tuple[str, ...]
) -> StdMessage | None:
    """The machine-readable part: by its type, else (mis-typed, e.g. as text/plain) the
    second part of a ``multipart/report`` of the right report-type, as RFC 6522 places it."""
    parts = list(_parts(message))
    for part in parts:
        if _content_type(part) in part_types:
            return part
    for part in parts:
        children = _children(part) if _report_type(part) in report_types else []
        if len(children) >= 2 and not children[1].is_multipart():
            return children[1]
    return None


def _dsn_recipient(fields: Mapping[str, str]) -> RecipientReport | None:
    final = _address(fields.get("final-recipient"))
    original = _address(fields.get("original-recipient"))
    recipient = original or final
    if recipient is None:
        return None
    diagnostic = _diagnostic(fields.get("diagnostic-code"))
    status = _status(fields.get("status")) or _status_in_text(diagnostic)
    action = _action(fields.get("action"), status)
    if action is None:
        return None
    return RecipientReport(
        recipient=recipient,
        action=action,
        status=status,
        diagnostic=diagnostic,
        remote_mta=_host(fields.get("remote-mta")),
        final_recipient=final,
        original_recipient=original,
        last_attempt=_date(fields.get("last-attempt-date")),
        will_retry_until=_date(fields.get("will-retry-until")),
    )


def _envid(value: str | None) -> str | None:
    return (_strip_comments(value) or None) if value else None


# -- the returned original --------------------------------------------------------------------


def _original_headers(message: StdMessage) -> HeaderMap:
    for part in _parts(message):
        if _content_type(part) in _ORIGINAL_PART_TYPES:
            headers = _part_headers(part)
            if headers:
                return headers
    return _no_headers()


def _part_headers(part: StdMessage) -> HeaderMap:
    children = _children(part)
    encoding = (_header(part, "Content-Transfer-Encoding") or "").lower()
    if children and encoding in _IDENTITY_ENCODINGS:
        return _header_map(children[0].raw_items())
    return _headers_in_text(_structured_text(part))


def _headers_in_text(text: str) -> HeaderMap:
    parser = email.parser.HeaderParser(policy=email.policy.default)
    return _header_map(parser.parsestr(text.lstrip("\r\n")).raw_items())


def _header_map(pairs: Iterable[tuple[str, object]]) -> HeaderMap:
    from mailsync._message import HeaderMap, decode_header_value

    return HeaderMap(
        (name, " ".join(_undo_surrogates(decode_header_value(value)).split()))
        for name, value in pairs
    )


def _original_message_id(
    message: StdMessage, original: Mapping[str, str], *preferred: str | None
) -> str | None:
    from mailsync._message import _msgid

    for value in (*preferred, original.get("Message-ID"), _header(message, "In-Reply-To")):
        found = _msgid(value)
        if found:
            return found
    return None


# -- MDN (RFC 8098) ---------------------------------------------------------------------------


def _parse_mdn(message: StdMessage) -> DeliveryReport | None:
    part = _report_part(
        message, _MDN_PART_TYPES, ("disposition-notification", "global-disposition-notification")
    )
    if part is None:
        return None
    groups = _field_groups(_structured_text(part))
    fields: dict[str, str] = {}
    for group in groups:  # one block by the RFC; merged in case a blank line crept in
        for name, value in group.items():
            fields.setdefault(name, value)
    recipient = _mdn_recipient(fields)
    if recipient is None and "disposition" not in fields:
        return None
    original = _original_headers(message)
    reporting_ua = fields.get("reporting-ua", "").partition(";")[0].strip()
    return DeliveryReport(
        kind="mdn",
        original_message_id=_original_message_id(
            message, original, fields.get("original-message-id")
        ),
        reporting_mta=reporting_ua or None,
        recipients=(recipient,) if recipient else (),
        original_headers=original,
        subject=_header(message, "Subject"),
    )


def _mdn_recipient(fields: Mapping[str, str]) -> RecipientReport | None:
    final = _address(fields.get("final-recipient"))
    original = _address(fields.get("original-recipient"))
    recipient = original or final
    disposition = _disposition_type(fields.get("disposition"))
    if recipient is None or disposition is None:
        return None
    problem = fields.get("error") or fields.get("failure") or fields.get("warning")
    return RecipientReport(
        recipient=recipient,
        action=disposition,
        diagnostic=" ".join(problem.split()) if problem else None,
        final_recipient=final,
        original_recipient=original,
    )


def _disposition_type(value: str | None) -> str | None:
    """``"manual-action/MDN-sent-manually; displayed/error"`` -> ``"displayed"``."""
    if not value:
        return None
    _, _, disposition = _strip_comments(value).partition(";")
    words = disposition.split("/", 1)[0].split()
    return words[0].lower() if words else None


# -- non-standard bounces ---------------------------------------------------------------------

_DAEMON_MAILBOX = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|mdaemon)$", re.IGNORECASE
)
_DAEMON_NAME = re.compile(
    r"^(?:mail delivery (?:sub)?system|mail delivery service|mailer[-_ ]?daemon)$",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"""^\s*(?:
        undelivered\ mail\ returned\ to\ sender
      | undeliver(?:able|ed)(?:\ mail)?\s*:
      | undeliverable(?:\ mail|\ message)?\s*$
      | returned\ mail\s*:
      | mail\ delivery\ failed
      | failure\ notice\s*$
      | delivery\ status\ notification\s*\((?:failure|delay)\)
      | delivery\ failure\s*:
      | delivery\ notification\s*:\s*delivery\ has\ (?:failed|been\ delayed)
      | non-?deliver(?:y|able)\ (?:report|notification|mail)
      | warning\s*:\ could\ not\ send\ message
      | delayed\ mail\ \(still\ being\ retried\)
      | mail\ system\ error\ -\ returned\ mail
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*-{2,}.*\b(?:copy of the message|original message|message headers? follow"
    r"|returned message|undelivered message|unsent message|original headers)\b.*$",
    re.IGNORECASE | re.MULTILINE,
)
_BOUNCE_WORDS = re.compile(
    r"could ?n[o']t be (?:delivered|reached)|was not delivered|not (?:yet )?been delivered"
    r"|cannot be (?:delivered|reached)|did not reach|undeliver|delivery (?:has )?failed"
    r"|failed|permanent|giving up|given up|rejected|does not exist|user unknown"
    r"|unknown (?:user|recipient)|delayed|temporar",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"not yet been delivered|has not been delivered yet|will (?:continue|keep) trying"
    r"|attempts will continue|still being retried|delivery (?:has been )?delayed"
    r"|could not send message for past",
    re.IGNORECASE,
)
_PERMANENT_WORDS = re.compile(
    r"permanent|given up|giving up|not going to try again|could ?n[o']t be delivered"
    r"|was not delivered|cannot be reached|delivery has failed",
    re.IGNORECASE,
)
_ADDR = r"[^\s<>()\[\]@,;:\"']+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
# A line that names a recipient: the address first, then nothing, a colon, "..." (sendmail),
# a comment, or " on <date>" (Exchange).
_ADDRESS_LINE = re.compile(
    rf"""^\s*[<'"]?\s*(?P<address>{_ADDR})\s*[>'"]?\s*(?P<rest>$|:.*|\.\.\..*|\(.*|\s+on\s.*)$""",
    re.IGNORECASE,
)
_ADDRESS_IN_ANGLES = re.compile(rf"<(?P<address>{_ADDR})>")
_BECAUSE = re.compile(r"^\s*because\s*:\s*\n+(?P<reason>(?:[ \t]*\S.*\n?)+)", re.IGNORECASE | re.M)


def _parse_bounce(message: StdMessage) -> DeliveryReport | None:
    from_daemon = _from_daemon(message)
    if from_daemon is None and not _BOUNCE_SUBJECT.match(_header(message, "Subject") or ""):
        return None
    notice, quoted = _split_notice(_notice_text(message))
    original = _original_headers(message)
    if not original:
        original = _quoted_original(quoted)
    recipients = _bounce_recipients(message, notice)
    # Without a daemon sender only coded recipients or a returned original are evidence
    # enough: a newsletter with that subject may still list a contact address.
    if from_daemon is None:
        recipients = tuple(r for r in recipients if r.status is not None)
    if not recipients and not original:
        return None
    return DeliveryReport(
        kind="bounce",
        original_message_id=_original_message_id(message, original),
        reporting_mta=from_daemon or None,
        recipients=recipients,
        original_headers=original,
        subject=_header(message, "Subject"),
    )


def _from_daemon(message: StdMessage) -> str | None:
    """The sender's domain (maybe empty) when a mail system sent the message, else None."""
    return_path = _header(message, "Return-Path")
    if return_path is not None and not return_path.strip("<> "):
        sender = email.utils.parseaddr(_header(message, "From") or "")[1]
        return sender.rpartition("@")[2] if "@" in sender else ""
    for name, address in _addresses(_header(message, "From")):
        local, _, domain = address.rpartition("@") if "@" in address else (address, "", "")
        if _DAEMON_MAILBOX.match(local) or _DAEMON_NAME.match(name.strip()):
            return domain.lower()
    return None


def _addresses(value: str | None) -> list[tuple[str, str]]:
    if not value:
        return []
    try:
        return email.utils.getaddresses([value])
    except Exception:
        return []


def _notice_text(message: StdMessage) -> str:
    """The human-readable explanation: the first text/plain part, else the first text/html
    part with its tags removed."""
    leaves = [p for p in _parts(message) if not p.is_multipart()]
    for wanted in ("text/plain", "text/html"):
        for part in leaves:
            if _content_type(part) == wanted and part.get_content_disposition() != "attachment":
                text = _leaf_text(part)
                return _html_to_text(text) if wanted == "text/html" else text
    return ""


def _html_to_text(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", "\n", text)
    return html.unescape(re.sub(r"<[^>]*>", " ", text))


def _split_notice(text: str) -> tuple[str, str]:
    """(explanation, quoted original) of a text bounce, at its "copy of the message" line."""
    text = text.replace("\r\n", "\n")
    match = _ORIGINAL_MARKER.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.end() :]


def _quoted_original(text: str) -> HeaderMap:
    """Headers of an original quoted inline; only trusted when they carry a Message-ID or
    trace fields, so a quoted "From:/Subject:" summary is not mistaken for them."""
    if not text.strip():
        return _no_headers()
    headers = _headers_in_text(text)
    if any(name in headers for name in ("Message-ID", "Received", "Return-Path")):
        return headers
    return _no_headers()


def _bounce_recipients(message: StdMessage, notice: str) -> tuple[RecipientReport, ...]:
    ignored = _bounce_bystanders(message)
    found: dict[str, tuple[str, list[str]]] = {}
    if _BOUNCE_WORDS.search(notice):
        _collect_address_lines(notice, found)
    _collect_coded_lines(notice, found)
    if not found:
        for address in _split_list(_header(message, "X-Failed-Recipients")):
            found.setdefault(address.lower(), (address, []))
    return _bounce_reports([(a, d) for key, (a, d) in found.items() if key not in ignored], notice)


def _bounce_bystanders(message: StdMessage) -> set[str]:
    """Addresses a bounce mentions that cannot be the failed recipient: the sender of the
    original (who receives the bounce) and the mail system itself."""
    people = _addresses(_header(message, "To")) + _addresses(_header(message, "From"))
    return {address.lower() for _, address in people if address}


def _split_list(value: str | None) -> list[str]:
    return [item.strip().strip("<>") for item in (value or "").split(",") if "@" in item]


def _collect_address_lines(notice: str, found: dict[str, tuple[str, list[str]]]) -> None:
    """Recipients as most text bounces list them: a line starting with the address, the
    reason on the lines below it (qmail, Exim, Sendmail, Exchange, Notes)."""
    current: list[str] | None = None
    for line in notice.splitlines():
        match = _ADDRESS_LINE.match(line)
        if match:
            address = match.group("address")
            current = found.setdefault(address.lower(), (address, []))[1]
            rest = match.group("rest").lstrip(":. ")
            if rest and not re.match(r"on\s", rest):  # " on <date>" is not a reason
                current.append(rest)
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line.strip())


def _collect_coded_lines(notice: str, found: dict[str, tuple[str, list[str]]]) -> None:
    """Recipients named inline with an SMTP reply: ``550 5.1.1 <bob@example.net>: ...``."""
    for line in notice.splitlines():
        if _status_in_text(line) is None:
            continue
        for match in _ADDRESS_IN_ANGLES.finditer(line):
            address = match.group("address")
            entry = found.setdefault(address.lower(), (address, []))
            if not entry[1]:
                entry[1].append(line.strip())


def _bounce_reports(
    entries: list[tuple[str, list[str]]], notice: str
) -> tuple[RecipientReport, ...]:
    delayed_notice = bool(_DELAY_WORDS.search(notice)) and not _PERMANENT_WORDS.search(notice)
    permanent = bool(_PERMANENT_WORDS.search(notice))
    because = _BECAUSE.search(notice)  # Lotus Notes gives the reason in its own paragraph
    reports = []
    for address, lines in entries:
        diagnostic = " ".join(" ".join(lines).split()) or None
        if diagnostic is None and because is not None and len(entries) == 1:
            diagnostic = " ".join(because.group("reason").split())
        status = _status_in_text(diagnostic)
        temporary = status is not None and status.startswith("4") and not permanent
        action = "delayed" if delayed_notice or temporary else "failed"
        reports.append(
            RecipientReport(
                recipient=address,
                action=action,
                status=status,
                diagnostic=diagnostic,
                final_recipient=address,
            )
        )
    return tuple(reports)
