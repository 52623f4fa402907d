"""The envelope every sender uses: :func:`prepare` turns any outgoing message
(``EmailMessage``, bytes, :class:`~mailsync.Message`) into an :class:`Envelope`: sender,
recipients (To + Cc + Bcc), the bytes to transmit with Bcc removed, and the Message-ID. Every
sender backend goes through :func:`prepare`, so they agree on who gets what, and it refuses a
header block with control characters, whoever wrote it: lines end at LF only, as servers read
them, so ``Subject: x\rBcc: carol`` is one Subject to the server and must not make carol a
recipient. :func:`outgoing_bytes` holds messages mailsync stores (``append``) to the same rule.

Beside :mod:`mailsync._compose`, which builds messages (and whose address checks this uses).
No I/O here.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailsync._addresses import MAX_ADDRESSES, iter_addresses, parse_addresses
from mailsync._errors import ConfigError, InvalidAddress
from mailsync._message import Address, Message, as_bytes
from mailsync._mime import (
    MAX_HEADER_FIELDS,
    cr_line_ends,
    message_id_of,
    split_header_block,
)

if TYPE_CHECKING:
    # The stdlib email package loads where a message is built, not with this module:
    # sending bytes or a Message needs little of it.
    from email.message import EmailMessage

from mailsync._compose import check_address

__all__ = ["Envelope", "outgoing_bytes", "prepare"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a sender transmits for one message.

    Attributes:
        mail_from: The envelope sender (may be empty for a null sender).
        recipients: Every envelope recipient, in order, without duplicates.
        data: The bytes to transmit: CRLF line endings, Bcc removed.
        message_id: The Message-ID (without brackets).
        needs_smtputf8: Non-ASCII addresses or headers.
        eight_bit: The body has 8-bit bytes.
    """

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str
    needs_smtputf8: bool
    eight_bit: bool


_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEAD_LINE_END = re.compile(rb"\r?\n")
# In a header block: C0 controls but tab and LF, DEL, and a CR that does not end a line.
_HEAD_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_BLIND_HEADERS = frozenset({b"bcc", b"resent-bcc"})


def prepare(
    message: EmailMessage | bytes | Message,
    *,
    mail_from: str | None = None,
    rcpt_to: Iterable[str] | None = None,
    keep_bcc: bool = False,
) -> Envelope:
    """Work out the envelope of an outgoing message and the bytes to send.

    The message's own bytes are kept as they are (so a DKIM signature stays valid) except
    that line endings become CRLF, Bcc and Resent-Bcc header fields are removed (their
    addresses stay recipients), and a Message-ID and a Date are added when missing.
    Recipients are deduplicated, the domain compared case-insensitively. Header lines end
    at LF (or CRLF) only, as mail servers read them, and a header block holding a control
    character (a NUL, a CR that ends no line...; a tab is fine) is refused: servers would
    read it differently from each other and from mailsync. So the Message-ID returned is
    the one the recipients get, and a recipient is never taken from what a server reads as
    part of another field.

    Args:
        message: The message to send.
        mail_from: The envelope sender; by default the Sender, else the From address.
        rcpt_to: The envelope recipients; by default everyone in To, Cc and Bcc.
        keep_bcc: Keep the Bcc header fields in the bytes, for a transport that takes the
            recipients from the message itself and removes them before delivery (the Gmail
            and Graph send calls).

    Raises:
        InvalidAddress: No recipient, or an envelope address is invalid.
        ConfigError: The message cannot be serialised, its header block is malformed or
            holds a control character, it has more header fields or recipients than the
            Message model reads (:data:`~mailsync._mime.MAX_HEADER_FIELDS`,
            :data:`~mailsync._message.MAX_ADDRESSES`), or it was retrieved with
            ``headers_only``.
    """
    if isinstance(message, Message) and message.headers_only:
        raise ConfigError("cannot send a message retrieved with headers_only=True")
    raw = _wire_bytes(message)
    parsed, offset = split_header_block(raw, max_fields=MAX_HEADER_FIELDS + 1)
    if len(parsed) > MAX_HEADER_FIELDS:  # the model would not read them all: nor does this
        raise ConfigError(f"the message has more than {MAX_HEADER_FIELDS} header fields")
    head = _checked_head(raw, offset)
    body = _LINE_END.sub(b"\r\n", raw[offset:])
    view = _HeaderView(parsed)
    blind = frozenset() if keep_bcc else _BLIND_HEADERS
    fields = [f for f in _header_fields(head) if _field_name(f) not in blind]
    message_id = view.message_id()
    if message_id is None:
        import email.utils

        author = view.addresses("from")
        domain = _domain_of(author[0].email if author else "")
        message_id = email.utils.make_msgid(domain=domain)[1:-1]
        fields.append(f"Message-ID: <{message_id}>\r\n".encode())
    if not view.has("date"):
        import email.utils

        now = email.utils.format_datetime(email.utils.localtime())
        fields.append(f"Date: {now}\r\n".encode())

    listed = [a.email for a in view.addresses("to", "cc", "bcc") if a.email]
    recipients = _dedupe(list(rcpt_to) if rcpt_to is not None else listed)
    if not recipients:
        raise InvalidAddress("the message has no recipient (To, Cc, Bcc or rcpt_to)", address="")
    if rcpt_to is None and len(recipients) > MAX_ADDRESSES:
        raise ConfigError(f"the message lists more than {MAX_ADDRESSES} recipients")
    for rcpt in recipients:
        check_address(rcpt)
    sender = _envelope_sender(view) if mail_from is None else mail_from.strip().strip("<>")
    if sender:
        check_address(sender)

    new_head = b"".join(fields)
    return Envelope(
        mail_from=sender,
        recipients=tuple(recipients),
        data=new_head + b"\r\n" + body,
        message_id=message_id,
        needs_smtputf8=not all(a.isascii() for a in (sender, *recipients))
        or not new_head.isascii(),
        eight_bit=not body.isascii(),
    )


def outgoing_bytes(message: EmailMessage | bytes | Message) -> bytes:
    """The bytes of a message mailsync is asked to store (``append``), as :func:`as_bytes`.

    A message built as an ``EmailMessage`` has its header values written here, so its header
    block is held to :func:`prepare`'s rule: no control character. Bytes and retrieved
    messages are stored as given (a copy of existing mail stays byte-exact).

    Raises:
        ConfigError: An ``EmailMessage`` whose header block holds a control character, or
            that cannot be serialised; a :class:`~mailsync.Message` retrieved with
            ``headers_only`` (storing it would store a message without its body).
    """
    if isinstance(message, Message) and message.headers_only:
        raise ConfigError(
            f"cannot append message {message.id or ''} retrieved with headers_only=True: "
            "it holds only its header block (get() it whole first)"
        )
    if isinstance(message, bytes | bytearray | Message):
        return as_bytes(message)
    raw = _wire_bytes(message)
    _checked_head(raw, split_header_block(raw)[1])
    return raw


class _HeaderView:
    """What :func:`prepare` reads from a header block, read as :class:`~mailsync.Message`
    reads it (the first Message-ID as :attr:`~mailsync.Message.message_id` reads it;
    addresses parsed from the raw values), from the fields
    :func:`~mailsync._mime.split_header_block` gave: the block is split once, and only the
    fields asked for are decoded."""

    __slots__ = ("_values",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        values: dict[str, list[str]] = {}
        for name, value in fields:
            values.setdefault(name.lower(), []).append(value)
        self._values = values

    def has(self, name: str) -> bool:
        return name in self._values

    def message_id(self) -> str | None:
        return message_id_of(self._values.get("message-id", ()))

    def addresses(self, *names: str) -> list[Address]:
        return [a for name in names for v in self._values.get(name, ()) for a in _parsed(v)]


#: Longer header values are parsed each time rather than kept in the cache.
_CACHED_VALUE_MAX = 256


def _parsed(value: str) -> tuple[Address, ...]:
    """The addresses in one raw header value, all of them: a recipient is never dropped
    (past :data:`~mailsync._message.MAX_ADDRESSES` the message is refused instead)."""
    if len(value) > _CACHED_VALUE_MAX:
        found = tuple(itertools.islice(iter_addresses([value]), MAX_ADDRESSES + 1))
        if len(found) > MAX_ADDRESSES:
            raise ConfigError(f"a header lists more than {MAX_ADDRESSES} addresses")
        return found
    return _parsed_short(value)


@functools.lru_cache(maxsize=1024)
def _parsed_short(value: str) -> tuple[Address, ...]:
    # A pure function, and bulk mail repeats its From and often its To: remembered.
    return parse_addresses([value])


def _wire_bytes(message: EmailMessage | bytes | Message) -> bytes:
    try:
        raw = as_bytes(message)
    except (TypeError, ValueError, LookupError, UnicodeError) as exc:
        raise ConfigError(f"cannot serialise the message: {exc}") from exc
    # Read as the Message model reads it: a message with no LF at all ends its lines with
    # CRs, and is sent with CRLFs, so the server reads the fields this reads.
    return raw.replace(b"\r", b"\r\n") if cr_line_ends(raw) else raw


def _checked_head(raw: bytes, offset: int) -> bytes:
    """The header fields of ``raw`` (the block before ``offset``, where the Message model
    ends it: :func:`~mailsync._mime.split_header_block`) with CRLF line ends and without
    the blank line after them (the caller adds it back).

    Raises:
        ConfigError: A control character in the block, or a line that is no header field
            before the end of the block.
    """
    block = raw[:offset]
    control = _HEAD_CONTROL.search(block)
    if control is not None:
        line_start = block.rfind(b"\n", 0, control.start()) + 1
        name = block[line_start : control.start()].partition(b":")[0][:60]
        # Each server reads these its own way (a NUL ends a value for some, a lone CR is
        # text to Dovecot and Postfix but a line end to others): refused, never "repaired".
        raise ConfigError(
            f"the header field {name.decode('ascii', 'replace')!r} holds the control "
            f"character {control.group(0)!r}; refusing to send a header block that servers "
            "would read differently"
        )
    head = _HEAD_LINE_END.sub(b"\r\n", block)
    if head.endswith(b"\r\n\r\n"):
        return head[:-2]
    if head == b"\r\n":  # a blank first line: there is no header at all
        return b""
    if offset < len(raw):
        # A line that is no header field ends the header block without a blank line: what
        # follows (a Bcc line, say) would be sent as body text. Outgoing mail must be sound.
        line = raw[offset:].split(b"\n", 1)[0].rstrip(b"\r")[:60]
        raise ConfigError(f"the header block has a line that is no header field: {line!r}")
    return head if not head or head.endswith(b"\r\n") else head + b"\r\n"


_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


def _header_fields(head: bytes) -> list[bytes]:
    """Split a header block (CRLF line ends only) into fields, each with its continuation
    lines and CRLFs; lines that are no field (an mbox ``From `` envelope line) are dropped."""
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1]:
        line += b"\r\n"
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] += line
        elif _FIELD_START.match(line):
            fields.append(line)
    return fields


def _field_name(field: bytes) -> bytes:
    return field.partition(b":")[0].strip().lower()


def _dedupe(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for address in addresses:
        address = address.strip()
        if not address:
            continue
        local, at, domain = address.rpartition("@")
        key = f"{local}@{domain.lower()}" if at else address
        seen.setdefault(key, address)
    return list(seen.values())


def _envelope_sender(view: _HeaderView) -> str:
    sender = [a for a in view.addresses("sender") if a.email]
    if sender:
        return sender[0].email
    author = view.addresses("from")
    return author[0].email if author else ""


def _domain_of(address: str) -> str:
    domain = address.rpartition("@")[2] if "@" in address else ""
    try:
        return domain.encode("idna").decode("ascii") if domain else "localhost"
    except UnicodeError:
        return "localhost"
