"""Building outgoing mail: :func:`compose` and the address checks.

:func:`compose` builds a standard ``EmailMessage`` (text, html alternative, attachments, inline
images, custom headers; Message-ID and Date set). Everything that ends up in a header is
checked first: addresses with email-validator (syntax, not policy), and no value may hold a
control character (a tab aside): line breaks are how header injection works, and a NUL cuts
a value short in some servers and not in others. What a sender makes of any outgoing message
(the envelope, the bytes sent) is :mod:`mailsync._envelope`'s.

No I/O here except reading attachment files given as paths (and DNS when deliverability
checks are asked for).
"""

from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mailsync._addresses import parse_addresses
from mailsync._errors import ConfigError, InvalidAddress
from mailsync._message import Address
from mailsync._mime import (
    msg_id,
)
from mailsync._types import AddressLike, AttachmentSpec

if TYPE_CHECKING:
    # The stdlib email package loads where a message is built, not with this module:
    # sending bytes or a Message needs little of it.
    from email.headerregistry import Address as HeaderAddress
    from email.message import EmailMessage

__all__ = ["AttachmentSpec", "check_address", "compose"]

# Everything str.splitlines() breaks on, plus NUL: the stdlib refuses these in headers with a
# bare ValueError, and SMTP servers treat some of them as line ends.
_LINE_BREAK = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_NEEDS_QUOTES = re.compile(r'[][\\()<>@,:;".]|^\s|\s$|\s\s')
# Control characters: C0 but the tab (which RFC 5322 allows as white space), DEL, C1, and the
# Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
# Printable ASCII but specials and white space: a message id is ASCII (RFC 5322 3.6.4).
_MSG_ID = re.compile(r"[!#-'*+\-./0-9=?@A-Z^-~]+")
# email-validator refuses these as "not globally deliverable"; in a private deployment (and
# in tests) they are perfectly good addresses, so syntax mode accepts them.
_SPECIAL_USE_SUFFIXES = ("localhost", "local", "invalid", "onion", "arpa", "internal")
# Headers compose() writes itself from its own arguments.
_STRUCTURE_HEADERS = frozenset({"mime-version", "content-transfer-encoding", "content-type"})
_ARGUMENT_HEADERS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "reply_to",
    "subject": "subject",
}
# Other headers that carry addresses: checked like the address arguments.
_ADDRESS_HEADERS = frozenset(
    {"sender", "disposition-notification-to", "return-receipt-to", "mail-followup-to"}
)


class _Checked(NamedTuple):
    """An address that passed validation, spelled for the header."""

    local: str
    domain: str
    needs_utf8: bool  # the local part is not ASCII: only SMTPUTF8 can carry it


def check_address(address: str, *, deliverability: bool = False) -> str:
    """Check an address's syntax (and, on request, that its domain can receive mail).

    Special-use domains such as ``.test``, ``.internal``, ``.local`` and ``localhost`` are
    accepted, as in any private deployment: this checks syntax, not policy. With
    ``deliverability=True`` the domain must be a public one that has MX or A records.

    Args:
        address: The bare address (``local@domain``).
        deliverability: Also look up the domain's MX/A records (network access).

    Returns:
        The normalised address.

    Raises:
        InvalidAddress: The address is not valid.
    """
    checked = _check(address, deliverability=deliverability)
    return f"{checked.local}@{checked.domain}"


def _check(address: object, *, deliverability: bool) -> _Checked:
    if not isinstance(address, str) or not address or _LINE_BREAK.search(address):
        raise InvalidAddress(f"invalid email address {address!r}", address=str(address))
    if deliverability:  # DNS answers change: never remembered
        return _validate(address, deliverability=True)
    return _check_syntax(address)


@functools.lru_cache(maxsize=4096)
def _check_syntax(address: str) -> _Checked:
    """:func:`_validate` without DNS: a pure function of the address, so remembered (bulk
    mail repeats its sender and often its recipients, and each check costs ~20 us). Only
    accepted addresses are cached; a refused one is checked, and raises, afresh each time."""
    return _validate(address, deliverability=False)


def _validate(address: str, *, deliverability: bool) -> _Checked:
    probe, suffix = address, ""
    domain = address.rpartition("@")[2].rstrip(".").lower()
    if not deliverability:
        suffix = next((s for s in _SPECIAL_USE_SUFFIXES if _ends_with_label(domain, s)), "")
        if suffix:  # validate the same syntax with a suffix email-validator does not police
            probe = address.rpartition("@")[0] + "@" + domain[: len(domain) - len(suffix)] + "test"
    try:
        import email_validator  # imported on first use: it costs ~20 ms at start-up

        result = email_validator.validate_email(
            probe,
            check_deliverability=deliverability,
            test_environment=not deliverability,
            allow_smtputf8=True,
            allow_domain_literal=not deliverability,
            globally_deliverable=deliverability,
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(f"invalid email address {address!r}: {exc}", address=address) from exc
    local = result.ascii_local_part or result.local_part
    domain_part = result.ascii_domain or result.domain
    if suffix:
        domain_part = domain_part[: len(domain_part) - len("test")] + suffix
    return _Checked(local, domain_part, needs_utf8=not local.isascii())


def _ends_with_label(domain: str, label: str) -> bool:
    return domain == label or domain.endswith("." + label)


def _check_text(what: str, value: object) -> str:
    """A header text: a str with no control character (a tab aside) and encodable (no lone
    surrogates)."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}")
    if _LINE_BREAK.search(value):
        raise ConfigError(f"{what} contains a line break, which could inject headers: {value!r}")
    if _CONTROL.search(value):
        raise ConfigError(f"{what} contains a control character: {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{what} is not valid text: {value!r}") from exc
    return value


def _check_header(name: object, value: object) -> None:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise ConfigError(f"invalid header name {name!r}")
    _check_text(f"header {name!r}", value)


def _is_one_address(value: object) -> bool:
    if isinstance(value, str | Address):
        return True
    # ("Ann", "a@x.test") is one address; ("a@x.test", "b@x.test") is two.
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
        and "@" not in value[0]
    )


def _parse_address_item(item: object) -> list[tuple[str, str]]:
    if isinstance(item, tuple):
        if len(item) != 2 or not all(isinstance(v, str) for v in item):
            raise InvalidAddress(f"an address pair is (name, address), not {item!r}", address="")
        return [(item[0], item[1])]
    if not isinstance(item, str):
        raise InvalidAddress(f"not an address: {item!r}", address=str(item))
    if _LINE_BREAK.search(item):
        raise InvalidAddress(f"line break in address {item!r}", address=item)
    unbalanced = _unbalanced(item)
    if unbalanced:  # the stdlib parser would "repair" it into something nobody typed
        raise InvalidAddress(f"invalid email address {item!r}: {unbalanced}", address=item)
    if not _BARE_NEEDS_PARSER.search(item):
        # A bare address: checked as typed, so the error quotes all of it ("bob@@x.test"),
        # not the fragment the stdlib parser kept ("@x.test").
        return [("", item.strip())]
    parsed = parse_addresses([item])
    # The stdlib parser "repairs" junk ("a b@x" becomes "ab@x"): an address it found must
    # be spelled in the input exactly, or the input was not what it looked like.
    if not parsed or any(not a.email or a.email not in item for a in parsed):
        raise InvalidAddress(f"invalid email address {item!r}{_why(item)}", address=item)
    return [(a.name, a.email) for a in parsed]


def _why(item: str) -> str:
    """``": <reason>"`` for the address between angle brackets, when that is what is wrong."""
    inner = re.search(r"<([^<>]*)>", item)
    if inner is None:
        return ""
    if not inner.group(1).strip():
        return ": nothing between '<' and '>'"
    try:
        check_address(inner.group(1).strip())
    except InvalidAddress as exc:
        return f": {exc.__cause__ or exc}"
    return ""


# What only a display name, a comment, a group or a list needs the address parser for.
_BARE_NEEDS_PARSER = re.compile(r'[<>(),;:"]')


def _unbalanced(text: str) -> str:
    """What is unbalanced in an address as typed (``"Bob <bob@x.test"``), or ``""``."""
    depth = {"<": 0, "(": 0}
    closing = {">": "<", ")": "("}
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return f"{char!r} without an opening {closing[char]!r}"
    if quoted:
        return "a '\"' without its closing '\"'"
    if depth["<"]:
        return "'<' without a closing '>'"
    if depth["("]:
        return "'(' without a closing ')'"
    return ""


def _checked_in(item: object, addr: str, *, deliverability: bool) -> _Checked:
    """:func:`_check`, whose error quotes what was typed when that held more than ``addr``."""
    try:
        return _check(addr, deliverability=deliverability)
    except InvalidAddress as exc:
        typed = str(item).strip() if isinstance(item, str) else ""
        if not typed or typed == addr:
            raise
        reason = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise InvalidAddress(
            f"invalid email address {addr!r} in {typed!r}{reason}", address=addr
        ) from exc.__cause__


def _addresses(
    values: AddressLike | Iterable[AddressLike] | None, *, deliverability: bool
) -> list[tuple[HeaderAddress, bool]]:
    """Validated header addresses, each with whether it needs SMTPUTF8."""
    from email.headerregistry import Address as HeaderAddress

    if values is None:
        return []
    items: Iterable[object] = [values] if _is_one_address(values) else values
    out: list[tuple[HeaderAddress, bool]] = []
    for item in items:
        for name, addr in _parse_address_item(item):
            if _LINE_BREAK.search(name) or _LINE_BREAK.search(addr):
                raise InvalidAddress(f"line break in address {item!r}", address=str(addr))
            if _CONTROL.search(name):
                raise InvalidAddress(f"control character in name {name!r}", address=str(addr))
            checked = _checked_in(item, addr, deliverability=deliverability)
            header = HeaderAddress(display_name=name, username=checked.local, domain=checked.domain)
            out.append((header, checked.needs_utf8))
    return out


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

    The structure follows what is given: ``text`` alone is one text/plain part; ``html`` adds a
    multipart/alternative; ``inline`` parts go with the html in a multipart/related; and
    ``attachments`` wrap it all in a multipart/mixed. Bodies are sent with ``\\n`` line ends
    as CRLF, and a final line break is added when missing, as every line on the wire has one.
    Non-ASCII subjects, names and file names are encoded (RFC 2047 / RFC 2231); a non-ASCII
    local part makes an SMTPUTF8 message with UTF-8 headers.

    Args:
        from_: The author: ``"a@example.test"``, ``"Ann <a@example.test>"``, an
            :class:`~mailsync.Address`, or ``(name, addr)``.
        to: One recipient or several (an iterable, or one string of comma-separated
            addresses). A 2-tuple is one ``(name, addr)`` unless its first item holds ``@``.
        subject: The subject (any language; encoded as needed).
        text: The plain-text body.
        html: An html body, sent as an alternative to ``text``.
        cc: Carbon-copy recipients.
        bcc: Blind recipients: kept in the returned message so senders know them, and removed
            from what is transmitted (see :func:`prepare`).
        reply_to: Where replies should go.
        attachments: Paths, or ``(filename, data, content_type)`` tuples.
        headers: Extra headers; one replaces a header of the same name (Message-ID, Date).
            Address headers (``Sender``...) are checked like the address arguments. Headers
            that arguments set (From, To, Cc, Bcc, Reply-To, Subject) and the structure's own
            (Content-Type, Content-Transfer-Encoding, MIME-Version) are refused.
        inline: Inline parts for the html, by Content-ID (``{"logo": "logo.png"}`` is shown by
            ``<img src="cid:logo">``).
        message_id: The Message-ID (without brackets); a new one by default.
        date: The Date; now by default.
        check_deliverability: Also check that the domains can receive mail (network).

    Returns:
        A standard ``EmailMessage``.

    Raises:
        InvalidAddress: An address is not valid, or holds a line break.
        ConfigError: A header name or value is invalid or holds a line break, an attachment
            is malformed or unreadable, or ``inline`` parts come without an html body.
    """
    import email.policy
    import email.utils
    from email.message import EmailMessage

    check = {"deliverability": check_deliverability}
    _check_text("subject", subject)
    author = _addresses(from_, **check)
    if len(author) != 1:
        raise InvalidAddress("from_ must be exactly one address", address=str(from_))
    fields = {
        "From": author,
        "To": _addresses(to, **check),
        "Cc": _addresses(cc, **check),
        "Bcc": _addresses(bcc, **check),
        "Reply-To": _addresses(reply_to, **check),
    }
    if not (fields["To"] or fields["Cc"] or fields["Bcc"]):
        raise InvalidAddress("a message needs at least one recipient", address="")
    extra = _extra_headers(headers or {}, check_deliverability)
    everyone = [*(a for values in fields.values() for a in values)]
    everyone += [a for _, value in extra if isinstance(value, list) for a in value]
    utf8 = any(needs for _, needs in everyone)
    # refold_source="none": the address fields set_raw() stores below are written as folded
    # here; every other header is a header object, which the policy folds as usual.
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy.clone(refold_source="none"))

    for name, addresses in fields.items():
        if addresses:
            msg.set_raw(name, _address_field([a for a, _ in addresses], utf8=utf8))
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date or email.utils.localtime())
    msg["Message-ID"] = _new_message_id(message_id, author[0][0].domain)
    for name, value in extra:
        del msg[name]
        if isinstance(value, list):
            msg.set_raw(name, _address_field([a for a, _ in value], utf8=utf8))
        else:
            msg[name] = value

    _set_body(msg, text, html, inline or {})
    for spec in attachments:
        filename, data, ctype = _load(spec)
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename or None)
    for part in msg.walk():  # the stdlib repeats MIME-Version in every part it adds
        if part is not msg:
            del part["MIME-Version"]
    return msg


def _address_field(addresses: list[HeaderAddress], *, utf8: bool) -> str:
    """An address header value, encoded and folded here rather than by the stdlib.

    Python's folder (3.11) can pull the comma after an encoded display name into an encoded
    word (``=?utf-8?q?=2C?=``), which merges two recipients into one broken address. So each
    address is formatted on its own, non-ASCII names as RFC 2047 words of at most 75
    characters (raw UTF-8 in an SMTPUTF8 message), and lines are folded between addresses.
    """
    pieces = [_format_address(a, utf8=utf8) for a in addresses]
    lines: list[str] = []
    for index, piece in enumerate(pieces):
        piece += "," if index < len(pieces) - 1 else ""
        if lines and len(lines[-1]) + 1 + len(piece) <= _FOLD_WIDTH:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return "\n ".join(lines)


_FOLD_WIDTH = 66  # 78 less room for the longest field name this writes ("Reply-To: ")
_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters: an encoded word of 72


def _format_address(address: HeaderAddress, *, utf8: bool) -> str:
    import email.utils

    spec = address.addr_spec
    name = address.display_name
    if not name:
        return spec
    if (name.isascii() or utf8) and "=?" not in name:
        phrase = f'"{email.utils.quote(name)}"' if _NEEDS_QUOTES.search(name) else name
    else:
        phrase = "\n ".join(_encoded_words(name))
    return f"{phrase} <{spec}>"


def _encoded_words(text: str) -> list[str]:
    words: list[str] = []
    chunk = ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > _WORD_BYTES:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return [
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    ]


def _extra_headers(
    headers: Mapping[str, str], deliverability: bool
) -> list[tuple[str, str | list[tuple[HeaderAddress, bool]]]]:
    out: list[tuple[str, str | list[tuple[HeaderAddress, bool]]]] = []
    for name, value in headers.items():
        _check_header(name, value)
        key = name.lower()
        if key in _STRUCTURE_HEADERS:
            raise ConfigError(f"header {name!r} is set by compose() from the body and parts")
        if key in _ARGUMENT_HEADERS:
            argument = _ARGUMENT_HEADERS[key]
            raise ConfigError(f"header {name!r} is set by compose()'s {argument}= argument")
        if key in _ADDRESS_HEADERS:
            addresses = _addresses(value, deliverability=deliverability)
            if not addresses:
                raise InvalidAddress(f"header {name!r} holds no address", address=value)
            out.append((name, addresses))
            continue
        if key == "message-id" and (msg_id(value) is None or not value.isascii()):
            raise ConfigError(f"invalid Message-ID {value!r} (a message id is ASCII)")
        out.append((name, value))
    return out


def _new_message_id(message_id: str | None, domain: str) -> str:
    import email.utils

    if message_id is None:
        return email.utils.make_msgid(domain=domain or "localhost")
    if not isinstance(message_id, str):
        raise ConfigError(f"message_id must be a string, not {type(message_id).__name__}")
    bare = message_id.strip().removeprefix("<").removesuffix(">")
    if not _MSG_ID.fullmatch(bare):  # no control character, white space, special or non-ASCII
        raise ConfigError(f"invalid message_id {message_id!r}")
    return f"<{bare}>"


def _set_body(
    msg: EmailMessage, text: str | None, html: str | None, inline: Mapping[str, AttachmentSpec]
) -> None:
    from email.message import EmailMessage

    for what, body in (("text", text), ("html", html)):
        if body is not None and not isinstance(body, str):
            raise ConfigError(f"{what} must be a string, not {type(body).__name__}")
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
        bare = _check_text("inline content id", content_id).strip().strip("<>")
        if not _MSG_ID.fullmatch(bare):
            raise ConfigError(f"invalid inline content id {content_id!r}")
        filename, data, ctype = _load(spec)
        maintype, _, subtype = ctype.partition("/")
        html_part.add_related(
            data,
            maintype=maintype,
            subtype=subtype,
            cid=f"<{bare}>",
            filename=filename or None,
            disposition="inline",
        )


def _load(spec: AttachmentSpec) -> tuple[str, bytes, str]:
    if isinstance(spec, tuple):
        if len(spec) != 3:
            raise ConfigError("an attachment tuple is (filename, data, content_type)")
        filename, data, ctype = spec
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"attachment data must be bytes, not {type(data).__name__}")
        if not isinstance(ctype, str) or not _CONTENT_TYPE.fullmatch(ctype):
            raise ConfigError(f"content type {ctype!r} is not type/subtype")
        return _check_text("attachment file name", filename), bytes(data), ctype.lower()
    if not isinstance(spec, str | os.PathLike):
        raise ConfigError(f"an attachment is a path or a tuple, not {type(spec).__name__}")
    path = Path(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read attachment {str(path)!r}: {exc.strerror}") from exc
    import mimetypes

    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return _check_text("attachment file name", path.name), data, ctype
