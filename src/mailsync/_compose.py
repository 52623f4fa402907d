"""Building outgoing mail: :func:`compose`, address checks, and the envelope every sender uses.

:func:`compose` builds a standard ``EmailMessage`` (text, html alternative, attachments, inline
images, custom headers; Message-ID and Date set). :func:`prepare` turns any outgoing message
(``EmailMessage``, bytes, :class:`~mailsync.Message`) into an :class:`Envelope`: sender,
recipients (To + Cc + Bcc), the bytes to transmit with Bcc removed, and the Message-ID. Every
sender backend goes through :func:`prepare`, so they agree on who gets what.

No I/O here except reading attachment files given as paths.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import mimetypes
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from pathlib import Path
from typing import TypeAlias

import email_validator

from mailsync._errors import ConfigError, InvalidAddress
from mailsync._message import Address, Message, as_bytes, header_block, parse_addresses

__all__ = ["AttachmentSpec", "Envelope", "check_address", "compose", "prepare"]

#: An attachment for :func:`compose`: a path, or ``(filename, data, content_type)``.
AttachmentSpec: TypeAlias = "str | os.PathLike[str] | tuple[str, bytes, str]"
AddressLike: TypeAlias = "str | Address | tuple[str, str]"


def check_address(address: str, *, deliverability: bool = False) -> str:
    """Check an address's syntax (and, on request, that its domain can receive mail).

    Special-use domains such as ``.test``, ``.internal`` and ``localhost`` are accepted, as in
    any private deployment: this checks syntax, not policy.

    Args:
        address: The bare address (``local@domain``).
        deliverability: Also look up the domain's MX/A records (network access).

    Returns:
        The normalised address.

    Raises:
        InvalidAddress: The address is not valid.
    """
    if not isinstance(address, str) or "\r" in address or "\n" in address:
        raise InvalidAddress(f"invalid email address {address!r}", address=str(address))
    try:
        result = email_validator.validate_email(
            address,
            check_deliverability=deliverability,
            test_environment=not deliverability,
            allow_smtputf8=True,
            globally_deliverable=deliverability,
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(f"invalid email address {address!r}: {exc}", address=address) from exc
    return str(result.normalized)


def _address(value: AddressLike, *, deliverability: bool) -> HeaderAddress:
    if isinstance(value, tuple):
        name, addr = value
    else:
        parsed = parse_addresses([str(value)])
        if len(parsed) != 1:
            raise InvalidAddress(f"invalid email address {value!r}", address=str(value))
        name, addr = parsed[0]
    for text in (name, addr):
        if "\r" in text or "\n" in text:
            raise InvalidAddress(f"line break in address {value!r}", address=str(value))
    normalised = check_address(addr, deliverability=deliverability)
    local, _, domain = normalised.rpartition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)


def _addresses(
    values: AddressLike | Iterable[AddressLike] | None, *, deliverability: bool
) -> list[HeaderAddress]:
    if values is None:
        return []
    if isinstance(values, str | Address) or (
        isinstance(values, tuple)
        and len(values) == 2
        and all(isinstance(v, str) for v in values)
        and "@" in values[1]
    ):
        values = [values]  # type: ignore[list-item]
    return [_address(v, deliverability=deliverability) for v in values]


def _check_header(name: str, value: str) -> None:
    if "\r" in name or "\n" in name or ":" in name or not name.strip():
        raise ConfigError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ConfigError(f"header {name!r} contains a line break, which could inject headers")


def compose(
    *,
    from_: AddressLike,
    to: AddressLike | Iterable[AddressLike],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    cc: AddressLike | Iterable[AddressLike] = (),
    bcc: AddressLike | Iterable[AddressLike] = (),
    reply_to: AddressLike | Iterable[AddressLike] | None = None,
    attachments: Iterable[AttachmentSpec] = (),
    headers: Mapping[str, str] | None = None,
    inline: Mapping[str, AttachmentSpec] | None = None,
    message_id: str | None = None,
    date: datetime | None = None,
    check_deliverability: bool = False,
) -> EmailMessage:
    """Build a message ready to send.

    Args:
        from_: The author: ``"a@example.test"``, ``"Ann <a@example.test>"`` or ``(name, addr)``.
        to: One recipient or several.
        subject: The subject (any language; encoded as needed).
        text: The plain-text body.
        html: An html body, sent as an alternative to ``text``.
        cc: Carbon-copy recipients.
        bcc: Blind recipients: kept in the returned message so senders know them, and removed
            from what is transmitted.
        reply_to: Where replies should go.
        attachments: Paths, or ``(filename, data, content_type)`` tuples.
        headers: Extra headers.
        inline: Inline parts for the html, by Content-ID (``{"logo": "logo.png"}`` is shown by
            ``<img src="cid:logo">``).
        message_id: The Message-ID (without brackets); a new one by default.
        date: The Date; now by default.
        check_deliverability: Also check that recipient domains can receive mail (network).

    Returns:
        A standard ``EmailMessage``.

    Raises:
        InvalidAddress: An address is not valid.
        ConfigError: A header value contains a line break, or an attachment is unreadable.
    """
    check = {"deliverability": check_deliverability}
    for name, value in (("Subject", subject),):
        _check_header(name, value)
    author = _addresses(from_, **check)
    if len(author) != 1:
        raise InvalidAddress("from_ must be exactly one address", address=str(from_))
    recipients = _addresses(to, **check)
    copies = _addresses(cc, **check)
    blind = _addresses(bcc, **check)
    if not (recipients or copies or blind):
        raise InvalidAddress("a message needs at least one recipient", address="")

    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = author[0]
    if recipients:
        msg["To"] = recipients
    if copies:
        msg["Cc"] = copies
    if blind:
        msg["Bcc"] = blind
    replies = _addresses(reply_to, **check)
    if replies:
        msg["Reply-To"] = replies
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date or email.utils.localtime())
    domain = author[0].domain or socket.getfqdn()
    msg["Message-ID"] = f"<{message_id}>" if message_id else email.utils.make_msgid(domain=domain)
    for name, value in (headers or {}).items():
        _check_header(name, value)
        if name.lower() in msg:
            del msg[name]
        msg[name] = value

    _set_body(msg, text, html, inline or {})
    for spec in attachments:
        filename, data, ctype = _load(spec)
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _set_body(
    msg: EmailMessage, text: str | None, html: str | None, inline: Mapping[str, AttachmentSpec]
) -> None:
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(text)
    if html is None:
        if inline:
            raise ConfigError("inline parts need an html body that refers to them by cid:")
        return
    if text is None:
        msg.set_content(html, subtype="html")
        html_part: EmailMessage = msg
    else:
        msg.add_alternative(html, subtype="html")
        payload = msg.get_payload()
        assert isinstance(payload, list)
        last = payload[-1]
        assert isinstance(last, EmailMessage)
        html_part = last
    for content_id, spec in inline.items():
        filename, data, ctype = _load(spec)
        maintype, _, subtype = ctype.partition("/")
        html_part.add_related(
            data,
            maintype=maintype,
            subtype=subtype,
            cid=f"<{content_id.strip('<>')}>",
            filename=filename,
            disposition="inline",
        )


def _load(spec: AttachmentSpec) -> tuple[str, bytes, str]:
    if isinstance(spec, tuple):
        if len(spec) != 3:
            raise ConfigError("an attachment tuple is (filename, data, content_type)")
        filename, data, ctype = spec
        if "/" not in ctype:
            raise ConfigError(f"content type {ctype!r} is not type/subtype")
        return filename, bytes(data), ctype
    path = Path(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read attachment {str(path)!r}: {exc.strerror}") from exc
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, data, ctype


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


def prepare(
    message: EmailMessage | bytes | Message,
    *,
    mail_from: str | None = None,
    rcpt_to: Iterable[str] | None = None,
) -> Envelope:
    """Work out the envelope of an outgoing message and the bytes to send.

    A Message-ID and a Date are added when missing. Bcc is removed from the transmitted
    header block but its addresses stay recipients.

    Raises:
        InvalidAddress: No recipient, or an envelope address is invalid.
    """
    parsed = email.message_from_bytes(as_bytes(message), policy=email.policy.SMTP)
    assert isinstance(parsed, EmailMessage)
    if parsed["Message-ID"] is None:
        sender_domain = _domain_of(parsed.get("From", ""))
        parsed["Message-ID"] = email.utils.make_msgid(domain=sender_domain or socket.getfqdn())
    if parsed["Date"] is None:
        parsed["Date"] = email.utils.format_datetime(email.utils.localtime())

    recipients = list(rcpt_to) if rcpt_to is not None else _header_recipients(parsed)
    recipients = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
    if not recipients:
        raise InvalidAddress("the message has no recipient (To, Cc, Bcc or rcpt_to)", address="")
    for rcpt in recipients:
        check_address(rcpt)
    sender = mail_from if mail_from is not None else _header_sender(parsed)
    if sender:
        check_address(sender)

    del parsed["Bcc"]
    data = as_bytes(parsed)
    head = header_block(data)
    addresses = [sender, *recipients]
    return Envelope(
        mail_from=sender,
        recipients=tuple(recipients),
        data=data,
        message_id=(str(parsed["Message-ID"]).strip().strip("<>")),
        needs_smtputf8=not all(a.isascii() for a in addresses) or not head.isascii(),
        eight_bit=not data.isascii(),
    )


def _header_recipients(msg: EmailMessage) -> list[str]:
    values: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        values += [str(v) for v in msg.get_all(name, [])]
    return [a.email for a in parse_addresses(values) if a.email]


def _header_sender(msg: EmailMessage) -> str:
    for name in ("Sender", "From"):
        found = parse_addresses([str(v) for v in msg.get_all(name, [])])
        if found and found[0].email:
            return found[0].email
    return ""


def _domain_of(value: object) -> str | None:
    found = parse_addresses([str(value)])
    if found and "@" in found[0].email:
        return found[0].email.rpartition("@")[2]
    return None
