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

Reports are read from the :class:`~mailsync.Message` model, not from the stdlib parser: its
decoded headers, and the MIME splitting of :mod:`mailsync._mime`, both of which read hostile
mail in milliseconds where ``email.policy.default`` can take minutes. Most messages are not
reports, and that is decided from the Content-Type, the sender and the subject before the
body is looked at. The work done on one message is capped (see "How much is read" below), so
a crafted message can neither stall a ``sync()`` loop nor a tracker. The report fields and
the text bounces are read by hand here, because no maintained library parses DSNs, MDNs and
free-text bounces into typed values. Text bounces are recognised conservatively: an ordinary
message that merely talks about delivery is not a report.

This module is pure: no I/O, no state, and it never raises on broken input. It must not import
:mod:`mailsync._message` at module level (``Message.delivery_report`` imports this module), so
the few helpers it shares with the message model are imported where they are used.
"""

from __future__ import annotations

import copy
import email.utils
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message as StdMessage
from email.policy import Compat32
from typing import TYPE_CHECKING, Protocol

from mailsync._mime import (
    decode_bytes,
    decode_header_value,
    decode_transfer,
    guess_boundary,
    msg_id,
    split_header_block,
    split_multipart,
    split_params,
    wire_bytes,
)
from mailsync._report_types import DeliveryReport, RecipientReport, ReportKind

if TYPE_CHECKING:
    from mailsync._message import HeaderMap, Message

__all__ = ["DeliveryReport", "RecipientReport", "ReportKind", "parse_report"]


def _no_headers() -> HeaderMap:
    from mailsync._message import HeaderMap

    return HeaderMap(())


class _HasRaw(Protocol):
    @property
    def raw(self) -> bytes: ...


def parse_report(message: _HasRaw | StdMessage | bytes) -> DeliveryReport | None:
    """Read a DSN, an MDN or a bounce; None for any other message.

    Only the first megabyte or so of a message's body is looked at (the report's own parts
    come first; what follows is the returned original), so a crafted message of any size
    is read in milliseconds.

    Args:
        message: A :class:`mailsync.Message` (anything with ``raw: bytes``), a stdlib
            ``email.message.Message``/``EmailMessage``, or the raw bytes.

    Returns:
        The report, or None when the message is not one. Never raises: a damaged report gives
        what could be read of it, or None.
    """
    try:
        model = _as_model(message)
        return None if model is None else _parse(model)
    except Exception:  # broken mail must read as "not a report"; see the contract
        return None


def _as_model(message: object) -> Message | None:
    from mailsync._message import Message

    if isinstance(message, Message):
        return message  # its decoded headers may be cached already
    if isinstance(message, bytes | bytearray | memoryview):
        return Message(bytes(message))
    if isinstance(message, StdMessage):
        return Message(_stdlib_bytes(message))
    raw = getattr(message, "raw", None)
    return Message(raw) if isinstance(raw, bytes) else None


def _stdlib_bytes(message: StdMessage) -> bytes:
    """The bytes of a stdlib message, each header written as it was parsed."""
    # Writing gives a multipart without a boundary one, in place; reading must not change
    # the caller's message (only one built in code lacks a boundary, and copies cheaply).
    if any(_lacks_boundary(part) for part in message.walk()):
        message = copy.deepcopy(message)
    return message.as_bytes(policy=_AS_PARSED)


def _lacks_boundary(part: StdMessage) -> bool:
    # The raw value: reading it through the policy would parse it, at a hostile header's cost.
    value = next((str(v) for name, v in part.raw_items() if name.lower() == "content-type"), "")
    value = value.lower()
    return value.lstrip().startswith("multipart/") and "boundary" not in value


class _AsParsed(Compat32):
    """Writes each header as it was parsed, or as the text a header object stands for.

    Never refolded: a message's own policy refolds a long header, which with
    ``policy.default`` parses it again and with ``compat32`` encodes it again, each taking
    minutes on a header of a megabyte: the very cost this module avoids.
    """

    def fold(self, name: str, value: str) -> str:
        return f"{name}: {value}{self.linesep}"

    def fold_binary(self, name: str, value: str) -> bytes:
        return self.fold(name, value).encode("utf-8", "surrogateescape")


_AS_PARSED = _AsParsed()


# -- how much is read -------------------------------------------------------------------------
# A mail library parses untrusted mail, so the work done for one message is capped: a crafted
# message must cost milliseconds, not stall a sync() loop or a tracker. Real reports are
# small and put what is read here first (RFC 6522: the notice, the status part, then the
# returned original), so every cap is far above what a mail system writes.

# Bytes of the message body whose MIME structure is split. Past them comes only the body of
# a returned original, which is never read (its headers come first).
_SCAN_LIMIT = 1 << 20
# Bytes the splitter may read in all: a nested multipart is a slice of its parent's body,
# and absurd nesting must not rescan the same megabyte at every level.
_SPLIT_BUDGET = 4 << 20
# Multipart levels descended into: a report sits at the top or inside a wrapper or two
# (multipart/signed around an AS2 MDN, a gateway's multipart/mixed).
_MAX_DEPTH = 5
# Parts looked at, in order; a report has three.
_MAX_PARTS = 100
# Bytes read of a delivery-status or disposition part: thousands of recipient groups, where
# one SMTP transaction carries a few hundred at most (Postfix's default limit is 1,000).
_STATUS_LIMIT = 1 << 20
# Bytes read of a bounce's human-readable notice and of a returned original's header block:
# the explanation, the failed addresses and the quoted headers come in the first few KB.
_TEXT_LIMIT = 64 << 10
# Characters of a From or To header parsed as addresses: the stdlib's address parser is
# pure Python, and a report's From and To each name one mailbox.
_ADDRESS_LIMIT = 4 << 10


# -- the message and its parts ----------------------------------------------------------------

_DSN_PART_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_MDN_PART_TYPES = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_MDN_REPORT_TYPES = frozenset({"disposition-notification", "global-disposition-notification"})
_DELIVERY_REPORT_TYPES = _DSN_REPORT_TYPES | _MDN_REPORT_TYPES
_ORIGINAL_PART_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
# Every report part's type, or the report-type of the multipart/report around it, holds one
# of these: how a report wrapped in another multipart is noticed without splitting it.
_REPORT_HINTS = (b"delivery-status", b"disposition-notification")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# As the message model reads a Content-Type: an invalid one means text/plain (RFC 2045).
_VALID_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_TOKEN = re.compile(r"[^\s;()\"]+")


@dataclass(slots=True)
class _Part:
    """A message or MIME part as :mod:`mailsync._mime` splits it: raw header fields
    (unfolded, not decoded), the undecoded body, whether the body lost its end to a cap,
    and the parts of a multipart."""

    fields: list[tuple[str, str]]
    body: bytes
    content_type: str
    params: dict[str, str]
    cut: bool = False
    children: list[_Part] = field(default_factory=list)

    def header(self, name: str) -> str:
        """The first raw value of header ``name``, or ``""``."""
        key = name.lower()
        return next((value for item, value in self.fields if item.lower() == key), "")

    @property
    def is_container(self) -> bool:
        """True for multiparts and attached messages: parts that are no text themselves."""
        return self.content_type.startswith(("multipart/", "message/"))

    @property
    def report_type(self) -> str | None:
        """The report-type of a ``multipart/report``, lower case; None for other parts."""
        if self.content_type != "multipart/report":
            return None
        value = self.params.get("report-type")
        return None if value is None else value.strip().lower()

    @property
    def transfer_encoding(self) -> str:
        token = _TOKEN.match(self.header("Content-Transfer-Encoding").strip())
        return token.group(0).lower() if token else ""

    @property
    def disposition(self) -> str:
        return split_params(self.header("Content-Disposition"))[0]


def _new_part(raw: bytes, default_type: str, *, cut: bool) -> _Part:
    """Split ``raw`` into header fields and body; ``cut`` says ``raw`` itself already lost
    its end."""
    fields, offset = split_header_block(raw)
    return _split_part(fields, raw, offset, default_type, cut=cut)


def _split_part(
    fields: list[tuple[str, str]],
    raw: bytes,
    offset: int,
    default_type: str,
    *,
    limit: int | None = None,
    cut: bool,
) -> _Part:
    """The part whose header ``fields`` end at ``offset`` in ``raw`` and whose body (the first
    ``limit`` bytes of it) follows."""
    body = raw[offset:] if limit is None else raw[offset : offset + limit]
    content_type = next((value for name, value in fields if name.lower() == "content-type"), "")
    main, params = split_params(content_type)
    if not _VALID_TYPE.fullmatch(main):
        main = "text/plain" if main else default_type
    return _Part(fields, body, main, params, cut or len(body) < len(raw) - offset)


class _Splitter:
    """Splits a message into its parts as the message model does (``multipart/digest``
    parts default to ``message/rfc822``; a multipart whose boundary never occurs is text),
    within the caps above; attached messages are not looked into: a forwarded bounce is
    not a bounce."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.budget = _SPLIT_BUDGET

    def visit(self, part: _Part, depth: int) -> None:
        self.parts.append(part)
        if not part.content_type.startswith("multipart/") or depth >= _MAX_DEPTH:
            return
        split = self._split(part)
        if split is None:
            return
        chunks, boundary = split
        # A cut multipart that never closed ends in a cut part.
        last_cut = part.cut and b"--" + wire_bytes(boundary) + b"--" not in part.body
        default = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
        for index, chunk in enumerate(chunks):
            if len(self.parts) >= _MAX_PARTS:
                return
            child = _new_part(chunk, default, cut=last_cut and index == len(chunks) - 1)
            part.children.append(child)
            self.visit(child, depth + 1)

    def _split(self, part: _Part) -> tuple[list[bytes], str] | None:
        """The multipart's parts and the boundary that split them, or None."""
        body = part.body
        self.budget -= len(body)
        if self.budget < 0:
            return None  # kept whole, as a multipart: not read as text either
        boundary = part.params.get("boundary")
        chunks = split_multipart(body, boundary) if boundary else None
        if boundary and chunks is not None:
            return chunks, boundary
        # No boundary parameter, or one that never occurs: find the real one.
        self.budget -= 2 * len(body)
        guessed = guess_boundary(body) if self.budget >= 0 else None
        chunks = split_multipart(body, guessed) if guessed else None
        if guessed and chunks is not None:
            return chunks, guessed
        part.content_type = "text/plain"  # no part boundary anywhere: it is just text
        return None


def _parts(message: Message) -> list[_Part]:
    """The message and every part nested in it, in order, within the caps above."""
    # The model has split the header block already (reading its headers did) and caches the
    # split: the same split_header_block on the same bytes, so it is not done again here.
    root = message._root()
    top = _split_part(
        list(root.fields), root.raw, root.offset, "text/plain", limit=_SCAN_LIMIT, cut=False
    )
    splitter = _Splitter()
    splitter.visit(top, 0)
    return splitter.parts


def _head(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of ``data``, cut after a line break where there
    is one (a line break ends a character in every charset mail uses)."""
    if len(data) <= limit:
        return data
    end = data.rfind(b"\n", 0, limit)
    return data[: end + 1] if end > 0 else data[:limit]


def _body(part: _Part, limit: int) -> tuple[bytes, bool]:
    """The part's content, transfer encoding undone, cut to ``limit`` bytes; and whether it
    was cut."""
    # Quoted-printable takes up to three bytes per byte it encodes.
    encoded = _head(part.body, 3 * limit)
    data = decode_transfer(encoded, part.transfer_encoding)
    return _head(data, limit), part.cut or len(encoded) < len(part.body) or len(data) > limit


def _text(part: _Part, limit: int, default_charset: str | None = None) -> tuple[str, bool]:
    """The part's content as text (its charset, else ``default_charset``, best-effort), cut
    to ``limit`` bytes; and whether it was cut."""
    data, cut = _body(part, limit)
    return decode_bytes(data, part.params.get("charset") or default_charset), cut


@dataclass(frozen=True, slots=True)
class _Mail:
    """A message worth reading as a report: its decoded headers, its parts, and what its
    headers already said."""

    headers: HeaderMap
    parts: list[_Part]
    from_daemon: str | None
    bounce_subject: bool

    def header(self, name: str) -> str | None:
        """One decoded header value on one line; None when absent or empty."""
        return _one_line(self.headers.get(name))


def _one_line(value: str | None) -> str | None:
    return (" ".join(value.split()) or None) if value else None


def _parse(message: Message) -> DeliveryReport | None:
    mail = _worth_reading(message)
    if mail is None:
        return None
    for parse in (_parse_dsn, _parse_mdn, _parse_bounce):
        report = parse(mail)
        if report is not None:
            return report
    return None


def _worth_reading(message: Message) -> _Mail | None:
    """The message ready to read, or None when its headers already say it is no report.

    Most messages are not reports: this decides from the Content-Type, the sender and the
    subject (the model's decoded headers, usually cached already) before the body is split.
    Only a multipart from an ordinary sender under an ordinary subject needs a look at the
    body, and then a byte search for a report's part type is enough to let it go.
    """
    headers = message.headers
    content_type, params = split_params(headers.get("Content-Type", ""))
    if content_type == "multipart/report":
        report_type = params.get("report-type")
        if report_type is not None and report_type.strip().lower() not in _DELIVERY_REPORT_TYPES:
            return None  # an abuse (ARF) or TLS report: structured, but not about delivery
    from_daemon = _from_daemon(headers)
    bounce_subject = bool(_BOUNCE_SUBJECT.match(_one_line(headers.get("Subject")) or ""))
    worth = (
        content_type in ("multipart/report", *_DSN_PART_TYPES, *_MDN_PART_TYPES)
        or from_daemon is not None
        or bounce_subject
        or (content_type.startswith("multipart/") and _mentions_report(message.raw))
    )
    return _Mail(headers, _parts(message), from_daemon, bounce_subject) if worth else None


def _mentions_report(raw: bytes) -> bool:
    """Whether a report part's type occurs where the splitter would look for it."""
    header_end = _HEADER_END.search(raw)
    scanned = raw[: (header_end.end() if header_end else 0) + _SCAN_LIMIT].lower()
    return any(hint in scanned for hint in _REPORT_HINTS)


def _report_part(
    parts: list[_Part], part_types: frozenset[str], report_types: frozenset[str]
) -> _Part | None:
    """The machine-readable part: by its type, else (mis-typed, e.g. as text/plain) the
    second part of a ``multipart/report`` of the right report-type, as RFC 6522 places it."""
    for part in parts:
        if part.content_type in part_types:
            return part
    for part in parts:
        children = part.children if part.report_type in report_types else []
        if len(children) >= 2 and not children[1].is_container:
            return children[1]
    return None


def _field_groups_of(part: _Part) -> list[dict[str, str]]:
    """The field blocks of a status or disposition part (UTF-8 unless it says otherwise,
    as RFC 6533 reports are)."""
    text, cut = _text(part, _STATUS_LIMIT, "utf-8")
    groups = _field_groups(text)
    return groups[:-1] if cut else groups  # the last block may have lost fields to the cut


def _original_headers(parts: list[_Part]) -> HeaderMap:
    for part in parts:
        if part.content_type in _ORIGINAL_PART_TYPES:
            headers = _part_headers(part)
            if headers:
                return headers
    return _no_headers()


def _part_headers(part: _Part) -> HeaderMap:
    data, _ = _body(part, _TEXT_LIMIT)
    charset = part.params.get("charset")
    if charset and not part.content_type.startswith("message/") and not data.isascii():
        # text/rfc822-headers may say how its 8-bit text is encoded; the decoding of header
        # values below reads 8-bit text as UTF-8.
        data = decode_bytes(data, charset).encode("utf-8")
    return _headers_in(data)


def _headers_in(data: bytes) -> HeaderMap:
    fields, _ = split_header_block(data.lstrip(b"\r\n"))
    return _header_map(fields)


def _header_map(fields: Iterable[tuple[str, str]]) -> HeaderMap:
    from mailsync._message import HeaderMap

    return HeaderMap((name, " ".join(decode_header_value(value).split())) for name, value in fields)


def _original_message_id(
    mail: _Mail, original: Mapping[str, str], *preferred: str | None
) -> str | None:
    for value in (*preferred, original.get("Message-ID"), mail.header("In-Reply-To")):
        found = msg_id(value)
        if found:
            return found
    return None


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


def _field_groups(text: str) -> list[dict[str, str]]:
    """Split report text into blocks of fields (lower-case name -> unfolded value).

    Blocks are separated by blank lines; a field seen twice also starts a new block, because
    some servers forget the blank line between recipients. Lines that are not fields are
    skipped.
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


def _per_message_fields(groups: Iterable[Mapping[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for group in groups:
        for name in _PER_MESSAGE_FIELDS:
            if name in group:
                fields.setdefault(name, group[name])
    return fields


def _strip_comments(value: str) -> str:
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


def _parse_dsn(mail: _Mail) -> DeliveryReport | None:
    part = _report_part(mail.parts, _DSN_PART_TYPES, _DSN_REPORT_TYPES)
    if part is None:
        return None
    groups = _field_groups_of(part)
    fields = _per_message_fields(groups)
    recipients = tuple(r for r in map(_dsn_recipient, groups) if r is not None)
    if not recipients and "reporting-mta" not in fields:
        return None  # whatever this part is, it is not a delivery status
    original = _original_headers(mail.parts)
    return DeliveryReport(
        kind="dsn",
        original_message_id=_original_message_id(
            mail, original, fields.get("x-original-message-id")
        ),
        envid=_envid(fields.get("original-envelope-id")),
        reporting_mta=_host(fields.get("reporting-mta")),
        recipients=recipients,
        original_headers=original,
        subject=mail.header("Subject"),
        arrival_date=_date(fields.get("arrival-date")),
    )


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


# -- MDN (RFC 8098) ---------------------------------------------------------------------------


def _parse_mdn(mail: _Mail) -> DeliveryReport | None:
    part = _report_part(mail.parts, _MDN_PART_TYPES, _MDN_REPORT_TYPES)
    if part is None:
        return None
    fields: dict[str, str] = {}
    # One block by the RFC; merged in case a blank line crept in.
    for group in _field_groups_of(part):
        for name, value in group.items():
            fields.setdefault(name, value)
    recipient = _mdn_recipient(fields)
    if recipient is None and "disposition" not in fields:
        return None
    original = _original_headers(mail.parts)
    reporting_ua = fields.get("reporting-ua", "").partition(";")[0].strip()
    return DeliveryReport(
        kind="mdn",
        original_message_id=_original_message_id(mail, original, fields.get("original-message-id")),
        reporting_mta=reporting_ua or None,
        recipients=(recipient,) if recipient else (),
        original_headers=original,
        subject=mail.header("Subject"),
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
# Every pattern here runs on text a stranger wrote, so none may backtrack more than linearly:
# no two adjacent quantifiers that can match the same characters.

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
# A "copy of the message follows" line: dashes first, then one of these phrases.
_ORIGINAL_MARKER = re.compile(
    r"\b(?:copy of the message|original message|message headers? follow"
    r"|returned message|undelivered message|unsent message|original headers)\b",
    re.IGNORECASE,
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
# a comment, or " on <date>" (Exchange). The lookbehind, not a second run of spaces, asks for
# the space before "on".
_ADDRESS_LINE = re.compile(
    rf"""^\s*(?:[<'"]\s*)?(?P<address>{_ADDR})\s*(?:[>'"]\s*)?"""
    r"""(?P<rest>$|:.*|\.\.\..*|\(.*|(?<=\s)on\s.*)$""",
    re.IGNORECASE,
)
_ADDRESS_IN_ANGLES = re.compile(rf"<(?P<address>{_ADDR})>")
_BECAUSE = re.compile(
    r"^[ \t]*because[ \t]*:(?:[^\S\n]*\n)+(?P<reason>(?:[ \t]*\S.*\n?)+)",
    re.IGNORECASE | re.MULTILINE,
)
_SCRIPT = re.compile(r"<(script|style)\b", re.IGNORECASE)
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def _parse_bounce(mail: _Mail) -> DeliveryReport | None:
    if mail.from_daemon is None and not mail.bounce_subject:
        return None
    notice, quoted = _split_notice(_notice_text(mail.parts))
    original = _original_headers(mail.parts)
    if not original:
        original = _quoted_original(quoted)
    recipients = _bounce_recipients(mail, notice)
    # Without a daemon sender only coded recipients or a returned original are evidence
    # enough: a newsletter with that subject may still list a contact address.
    if mail.from_daemon is None:
        recipients = tuple(r for r in recipients if r.status is not None)
    if not recipients and not original:
        return None
    return DeliveryReport(
        kind="bounce",
        original_message_id=_original_message_id(mail, original),
        reporting_mta=mail.from_daemon or None,
        recipients=recipients,
        original_headers=original,
        subject=mail.header("Subject"),
    )


def _from_daemon(headers: HeaderMap) -> str | None:
    """The sender's domain (maybe empty) when a mail system sent the message, else None."""
    return_path = _one_line(headers.get("Return-Path"))
    sender = (_one_line(headers.get("From")) or "")[:_ADDRESS_LIMIT]
    if return_path is not None and not return_path.strip("<> "):
        address = email.utils.parseaddr(sender)[1]
        return address.rpartition("@")[2] if "@" in address else ""
    for name, address in _addresses(sender):
        local, _, domain = address.rpartition("@") if "@" in address else (address, "", "")
        if _DAEMON_MAILBOX.match(local) or _DAEMON_NAME.match(name.strip()):
            return domain.lower()
    return None


def _addresses(value: str | None) -> list[tuple[str, str]]:
    if not value:
        return []
    try:
        return email.utils.getaddresses([value[:_ADDRESS_LIMIT]])
    except Exception:
        return []


def _notice_text(parts: list[_Part]) -> str:
    """The human-readable explanation: the first text/plain part, else the first text/html
    part with its tags removed; only its first :data:`_TEXT_LIMIT` bytes."""
    leaves = [part for part in parts if not part.is_container]
    for wanted in ("text/plain", "text/html"):
        for part in leaves:
            if part.content_type == wanted and part.disposition != "attachment":
                text, _ = _text(part, _TEXT_LIMIT)
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
    text = text.replace("\r\n", "\n")
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        if line.lstrip(" \t").startswith("--") and _ORIGINAL_MARKER.search(line):
            return text[:start], text[end:]
        start = end + 1
    return text, ""


def _quoted_original(text: str) -> HeaderMap:
    """Headers of an original quoted inline; only trusted when they carry a Message-ID or
    trace fields, so a quoted "From:/Subject:" summary is not mistaken for them."""
    if not text.strip():
        return _no_headers()
    headers = _headers_in(text.encode("utf-8", "surrogateescape"))
    if any(name in headers for name in ("Message-ID", "Received", "Return-Path")):
        return headers
    return _no_headers()


def _bounce_recipients(mail: _Mail, notice: str) -> tuple[RecipientReport, ...]:
    ignored = _bounce_bystanders(mail)
    found: dict[str, tuple[str, list[str]]] = {}
    if _BOUNCE_WORDS.search(notice):
        _collect_address_lines(notice, found)
    _collect_coded_lines(notice, found)
    if not found:
        for address in _split_list(mail.header("X-Failed-Recipients")):
            found.setdefault(address.lower(), (address, []))
    return _bounce_reports([(a, d) for key, (a, d) in found.items() if key not in ignored], notice)


def _bounce_bystanders(mail: _Mail) -> set[str]:
    """Addresses a bounce mentions that cannot be the failed recipient: the sender of the
    original (who receives the bounce) and the mail system itself."""
    people = _addresses(mail.header("To")) + _addresses(mail.header("From"))
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
    permanent = bool(_PERMANENT_WORDS.search(notice))
    delayed_notice = not permanent and bool(_DELAY_WORDS.search(notice))
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
