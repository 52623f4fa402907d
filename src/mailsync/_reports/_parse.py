"""The entry point: :func:`parse_report` takes a message in any form, decides from its headers
whether it may be a report at all, and hands it to the readers of each kind in turn."""

from __future__ import annotations

import copy
import re
from email.message import Message as StdMessage
from email.policy import Compat32
from typing import Protocol

from mailsync._message import Message, MimeNode, mime_tree
from mailsync._mime import split_params
from mailsync._reports._bounce import bounce_subject, from_daemon, notice_text, parse_bounce
from mailsync._reports._json import parse_json_notification
from mailsync._reports._standard import (
    DSN_PART_TYPES,
    DSN_REPORT_TYPES,
    MDN_PART_TYPES,
    MDN_REPORT_TYPES,
    parse_dsn,
    parse_mdn,
)
from mailsync._reports._tree import SCAN_LIMIT, Mail, capped_headers, parts_of
from mailsync._reports._values import DeliveryReport

__all__ = ["parse_report"]

_DELIVERY_REPORT_TYPES = DSN_REPORT_TYPES | MDN_REPORT_TYPES
# Every report part's type, or the report-type of the multipart/report around it, holds one
# of these: how a report wrapped in another multipart is noticed without splitting it.
_REPORT_HINT = re.compile(rb"delivery-status|disposition-notification", re.IGNORECASE)
# How an SES notification mailed by SNS starts and what it must name.
_JSON_HINT = re.compile(rb"notificationType|eventType")


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
    if isinstance(message, Message):
        return message  # its decoded headers and its tree may be cached already
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
    minutes on a header of a megabyte: the very cost this package avoids.
    """

    def fold(self, name: str, value: str) -> str:
        return f"{name}: {value}{self.linesep}"

    def fold_binary(self, name: str, value: str) -> bytes:
        return self.fold(name, value).encode("utf-8", "surrogateescape")


_AS_PARSED = _AsParsed()


def _parse(message: Message) -> DeliveryReport | None:
    mail = _worth_reading(message)
    if mail is None:
        return None
    notice = notice_text(mail.parts)
    report = parse_dsn(mail, notice) or parse_mdn(mail)
    if report is None and notice.lstrip().startswith("{"):
        report = parse_json_notification(mail, notice)
    return report or parse_bounce(mail, notice)


def _worth_reading(message: Message) -> Mail | None:
    """The message ready to read, or None when its headers already say it is no report.

    Most messages are not reports: this decides from the Content-Type, the sender and the
    subject (read from the header block the model split, each value capped) before the body
    is split.
    Only a multipart from an ordinary sender under an ordinary subject needs a look at the
    body, and then a byte search for a report's part type is enough to let it go; a text
    from an ordinary sender is read only when it is a JSON notification.
    """
    root = mime_tree(message)
    headers = capped_headers(root.fields)
    content_type, params = split_params(headers.get("Content-Type", ""))
    if content_type == "multipart/report":
        report_type = params.get("report-type")
        if report_type is not None and report_type.strip().lower() not in _DELIVERY_REPORT_TYPES:
            return None  # an abuse (ARF) or TLS report: structured, but not about delivery
    daemon = from_daemon(headers)
    subject = bounce_subject(headers)
    worth = (
        content_type in ("multipart/report", *DSN_PART_TYPES, *MDN_PART_TYPES)
        or daemon is not None
        or subject
        or (content_type.startswith("multipart/") and _mentions(_REPORT_HINT, root))
        or (content_type in ("", "text/plain") and _is_json_notification(root))
    )
    return Mail(headers, parts_of(root), daemon, subject) if worth else None


def _mentions(pattern: re.Pattern[bytes], root: MimeNode) -> bool:
    """Whether ``pattern`` occurs in the part of the body the parsers would look at."""
    return pattern.search(root.raw, root.offset, root.offset + SCAN_LIMIT) is not None


def _is_json_notification(root: MimeNode) -> bool:
    start = root.raw[root.offset : root.offset + 64].lstrip()
    return start.startswith(b"{") and _mentions(_JSON_HINT, root)
