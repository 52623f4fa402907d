"""Replies and forwards: what :meth:`Message.reply` and :meth:`Message.forward` build.

Each builds a standard ``EmailMessage`` through :func:`~mailsync.compose` (so addresses and
headers are checked as for any message), ready for any Sender:

- who it goes to: a reply to the Reply-To (else the From), and with ``all=True`` also to
  everyone else in To and Cc but you; a reply to your own message goes to its recipients;
- the subject, with one ``Re:`` or ``Fwd:`` in front whatever other mail programs stacked
  there (``AW:``, ``SV:``, ``Re[2]:``, ``RE :``, ``回复：``...): they are taken off first;
- the thread: In-Reply-To and References as RFC 5322 section 3.6.4 says (References is the
  original's References, else its In-Reply-To, plus its Message-ID);
- the original, quoted below the answer (``> `` lines in the text, a ``blockquote`` in the
  html) or, for a forward, attached whole as ``message/rfc822`` (its bytes unchanged, so a
  DKIM signature in it still verifies) or quoted inline with its attachments.

The html of a message that has no text part is turned into text for quoting with the stdlib
HTML parser: a few lines of tag handling (no dependency is worth it for a quote).

No I/O.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser
from typing import TYPE_CHECKING, cast

from mailsync._compose import _is_one_address, compose
from mailsync._errors import ConfigError
from mailsync._message import Address, Message, parse_addresses, safe_filename
from mailsync._types import AddressLike, AttachmentSpec

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = ["forward", "forward_subject", "html_to_text", "reply", "reply_subject"]

# Prefixes mail programs put in front of a subject, case-insensitively, in the languages they
# ship in. "vs" is a reply in Finnish and a forward in Danish and Norwegian: both strip it.
_REPLY_WORDS = frozenset(
    {"re", "aw", "sv", "antw", "r", "rif", "res", "odp", "ynt", "atb", "vs", "απ", "σχετ", "отв"}
    | {"réf", "rép", "回复", "答复", "回覆", "返信", "답장"}
)
_FORWARD_WORDS = frozenset(
    {"fwd", "fw", "wg", "tr", "vb", "vl", "rv", "enc", "i", "pd", "doorst", "vs", "πρθ"}
    | {"转发", "轉寄", "轉發", "転送", "전달"}
)
# A word, an optional counter ("Re[2]:", "Re(2):", "Re^2:"), and a colon (fullwidth in CJK).
_PREFIX = re.compile(r"\s*([^\W\d_]{1,8})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*")
_MAX_REFERENCES = 50  # keep the thread's root and its most recent ancestors beyond that
_BODY = re.compile(r"<body[^>]*>(.*?)(?:</body>|\Z)", re.IGNORECASE | re.DOTALL)
_QUOTE_STYLE = "margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex"


def reply_subject(subject: str) -> str:
    """``"Re: "`` and the subject without the reply prefixes in front of it.

    ``"AW: Re[2]: Lunch"`` gives ``"Re: Lunch"``; ``"Fwd: Lunch"`` gives ``"Re: Fwd: Lunch"``.
    """
    base = _strip(subject, _REPLY_WORDS)
    return f"Re: {base}" if base else "Re:"


def forward_subject(subject: str) -> str:
    """``"Fwd: "`` and the subject without the forward prefixes in front of it."""
    base = _strip(subject, _FORWARD_WORDS)
    return f"Fwd: {base}" if base else "Fwd:"


def _strip(subject: str, words: frozenset[str]) -> str:
    text = subject.strip()
    while True:
        match = _PREFIX.match(text)
        if match is None or match.group(1).casefold() not in words:
            return text
        text = text[match.end() :]


def reply(
    message: Message,
    *,
    text: str | None,
    html: str | None,
    all: bool,
    quote: bool,
    from_: AddressLike | None,
    cc: AddressLike | Iterable[AddressLike],
    bcc: AddressLike | Iterable[AddressLike],
    attachments: Iterable[AttachmentSpec],
    headers: Mapping[str, str] | None,
) -> EmailMessage:
    """The reply to ``message``; see :meth:`Message.reply`."""
    _whole(message, "reply to")
    me = _me(message, from_)
    to = list(message.reply_to or ((message.from_,) if message.from_ else ()))
    if _same(to, me):  # a reply to your own message goes to its recipients
        to = list(message.to)
    if not to:
        raise ConfigError("the message has no From or Reply-To to reply to")
    copies: list[Address] = []
    if all:
        copies = [a for a in (*message.to, *message.cc) if not _same([a], me)]
    text_out, html_out, inline = _bodies(message, text, html, quote)
    return compose(
        from_=_spelled(me),
        to=[_spelled(a) for a in _unique(to)],
        cc=[*_others(copies, to), *_listed(cc)],
        bcc=bcc,
        subject=reply_subject(message.subject),
        text=text_out,
        html=html_out,
        attachments=attachments,
        inline=inline or None,
        headers={**_thread(message, in_reply_to=True), **(headers or {})},
    )


def forward(
    message: Message,
    *,
    to: AddressLike | Iterable[AddressLike],
    text: str | None,
    html: str | None,
    attach: bool,
    from_: AddressLike | None,
    cc: AddressLike | Iterable[AddressLike],
    bcc: AddressLike | Iterable[AddressLike],
    headers: Mapping[str, str] | None,
) -> EmailMessage:
    """The forward of ``message``; see :meth:`Message.forward`."""
    _whole(message, "forward")
    me = _me(message, from_)
    thread = {**_thread(message, in_reply_to=False), **(headers or {})}

    def build(
        text: str | None,
        html: str | None,
        inline: dict[str, AttachmentSpec],
        attachments: Sequence[AttachmentSpec],
    ) -> EmailMessage:
        return compose(
            from_=_spelled(me),
            to=to,
            cc=cc,
            bcc=bcc,
            subject=forward_subject(message.subject),
            text=text,
            html=html,
            inline=inline or None,
            attachments=attachments,
            headers=thread,
        )

    if attach:
        built = build("" if text is None and html is None else text, html, {}, ())
        _attach_original(built, message)
        return built
    text_out, html_out, inline = _bodies(message, text, html, quote=True, forwarding=True)
    kept: list[AttachmentSpec] = [
        (a.filename or safe_filename(None, a.content_type), a.data, a.content_type)
        for a in message.attachments
        if not (a.inline and a.content_id in inline)
    ]
    return build(text_out, html_out, inline, kept)


# -- who -----------------------------------------------------------------------------------------


def _whole(message: Message, what: str) -> None:
    if message.headers_only:
        raise ConfigError(f"cannot {what} a message retrieved with headers_only=True")


def _me(message: Message, from_: AddressLike | None) -> Address:
    """Who answers: ``from_``, else the address the message was delivered to."""
    if from_ is not None:
        if isinstance(from_, Address):
            return from_
        if isinstance(from_, tuple):
            return Address(from_[0], from_[1])
        found = parse_addresses([from_])
        if len(found) != 1:
            raise ConfigError(f"from_ must be one address, not {from_!r}")
        return found[0]
    for header in ("Delivered-To", "X-Original-To"):
        delivered = parse_addresses(message.headers.get_all(header)[:1])
        if delivered and delivered[0].email:
            mine = [a for a in (*message.to, *message.cc) if _same([a], delivered[0])]
            return mine[0] if mine else delivered[0]
    if len(message.to) == 1 and not message.cc:
        return message.to[0]
    raise ConfigError(
        "cannot tell which of the recipients you are: pass from_= (the address to answer from)"
    )


def _key(address: Address) -> str:
    # Local parts are case-sensitive on paper; in practice BOB@ and bob@ are one person, and
    # copying someone twice is the worse mistake.
    return address.email.casefold()


def _same(addresses: Sequence[Address], me: Address) -> bool:
    return len(addresses) == 1 and _key(addresses[0]) == _key(me)


def _unique(addresses: Iterable[Address]) -> list[Address]:
    seen: dict[str, Address] = {}
    for address in addresses:
        if address.email:
            seen.setdefault(_key(address), address)
    return list(seen.values())


def _others(copies: Iterable[Address], to: Sequence[Address]) -> list[AddressLike]:
    taken = {_key(a) for a in to}
    return [_spelled(a) for a in _unique(copies) if _key(a) not in taken]


def _listed(values: AddressLike | Iterable[AddressLike]) -> list[AddressLike]:
    if _is_one_address(values):
        return [cast("AddressLike", values)]
    return list(values)


def _spelled(address: Address) -> tuple[str, str]:
    return (address.name, address.email)


# -- thread --------------------------------------------------------------------------------------


def _thread(message: Message, *, in_reply_to: bool) -> dict[str, str]:
    ids = list(message.references) or ([message.in_reply_to] if message.in_reply_to else [])
    if message.message_id:
        ids.append(message.message_id)
    ids = list(dict.fromkeys(ids))
    if len(ids) > _MAX_REFERENCES:
        ids = [ids[0], *ids[-(_MAX_REFERENCES - 1) :]]
    found: dict[str, str] = {}
    if ids:
        found["References"] = " ".join(f"<{i}>" for i in ids)
    if in_reply_to and message.message_id:
        found["In-Reply-To"] = f"<{message.message_id}>"
    return found


# -- bodies --------------------------------------------------------------------------------------


def _bodies(
    message: Message,
    text: str | None,
    html: str | None,
    quote: bool,
    *,
    forwarding: bool = False,
) -> tuple[str | None, str | None, dict[str, AttachmentSpec]]:
    """The text and html of the answer, the original below them when ``quote``, and the
    original's inline images the quoted html shows."""
    if text is None and html is None:
        text = ""
    if not quote:
        return text, html, {}
    heading = _forward_heading(message) if forwarding else _attribution(message)
    text_out = None
    if text is not None:
        original = message.text or html_to_text(message.html)
        body = original if forwarding else _quoted(original)
        text_out = "\n\n".join(part for part in (text.rstrip("\n"), heading, body) if part)
    html_out = None
    inline: dict[str, AttachmentSpec] = {}
    if html is not None:
        original_html = _body_of(message.html) if message.html else _text_to_html(message.text)
        heading_html = html_lib.escape(heading).replace("\n", "<br>\n")
        if forwarding:
            block = f"<div>{heading_html}<br>\n{original_html}</div>"
        else:
            block = (
                f"<div>{heading_html}<br>\n"
                f'<blockquote type="cite" style="{_QUOTE_STYLE}">{original_html}</blockquote></div>'
            )
        html_out = f"{html}\n<br>\n{block}"
        inline = _inline_parts(message, original_html)
    return text_out, html_out, inline


def _attribution(message: Message) -> str:
    who = str(message.from_) if message.from_ else "someone"
    if message.date is None:
        return f"{who} wrote:"
    import email.utils

    return f"On {email.utils.format_datetime(message.date)}, {who} wrote:"


def _forward_heading(message: Message) -> str:
    lines = ["---------- Forwarded message ----------"]
    if message.from_:
        lines.append(f"From: {message.from_}")
    if message.date:
        import email.utils

        lines.append(f"Date: {email.utils.format_datetime(message.date)}")
    lines.append(f"Subject: {message.subject}")
    for label, addresses in (("To", message.to), ("Cc", message.cc)):
        if addresses:
            lines.append(f"{label}: {', '.join(str(a) for a in addresses)}")
    return "\n".join(lines)


def _quoted(text: str) -> str:
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    return "\n".join(_quote_line(line) for line in lines)


def _quote_line(line: str) -> str:
    # "> > x" would grow a space per level; mail programs write ">> x" for nested quotes.
    if not line:
        return ">"
    return ">" + line if line.startswith(">") else "> " + line


def _body_of(document: str) -> str:
    match = _BODY.search(document)
    return match.group(1) if match else document


def _text_to_html(text: str) -> str:
    return html_lib.escape(text.rstrip("\n")).replace("\n", "<br>\n")


def _inline_parts(message: Message, shown_html: str) -> dict[str, AttachmentSpec]:
    from mailsync._compose import _MSG_ID

    found: dict[str, AttachmentSpec] = {}
    for attachment in message.attachments:
        cid = attachment.content_id
        if (
            not cid
            or f"cid:{cid}" not in shown_html
            or not _MSG_ID.fullmatch(cid.replace("@", "x", 1))
        ):
            continue
        name = attachment.filename or safe_filename(None, attachment.content_type)
        found[cid] = (name, attachment.data, attachment.content_type)
    return found


def _attach_original(built: EmailMessage, message: Message) -> None:
    """Attach ``message`` whole as message/rfc822, its bytes as they came (RFC 2046 section
    5.2.1 allows no encoding there but 7bit, 8bit or binary)."""
    from email.parser import BytesParser

    original = BytesParser(policy=built.policy).parsebytes(message.raw)
    name = safe_filename((message.subject or "message")[:60] + ".eml", "message/rfc822")
    built.add_attachment(original, filename=name, cte="7bit" if message.raw.isascii() else "8bit")
    for part in built.iter_attachments():
        del part["MIME-Version"]


class _TextOfHTML(HTMLParser):
    """The visible text of an html body, with line breaks where blocks end."""

    _BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BREAKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(" ".join(data.split()) if data.strip() else "")


def html_to_text(document: str) -> str:
    """The visible text of an html body: tags, scripts and styles dropped, a line break where
    a block ends, runs of blank lines cut to one."""
    if not document:
        return ""
    parser = _TextOfHTML()
    parser.feed(document)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.split("\n"))).strip()
